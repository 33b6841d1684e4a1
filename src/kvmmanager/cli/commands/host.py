"""`kvm-manager host ...`: the libvirt hosts the manager drives."""

from __future__ import annotations

import time
from typing import Any

import typer

from kvmmanager.cli.api_client import client
from kvmmanager.cli.helpers import act_and_say, api_get
from kvmmanager.cli.output import emit
from kvmmanager.cli.urls import q

NAME = "host"
app = typer.Typer(
    help="Hosts (libvirt connections): add, list, show, remove.", no_args_is_help=True
)

COLUMNS = ["name", "uri", "status", "reason", "stale", "vm_count"]


def _path(name: str) -> str:
    # One path segment: a '/' in the argument cannot reach another route.
    return f"/api/hosts/{q(name)}"


@app.command("list")
def list_hosts(ctx: typer.Context) -> None:
    """List hosts with their connection status (connected, not responding, reconnecting,
    failed) and, for a host that is not connected, how old its VMs' shown state is."""
    hosts = api_get(ctx, "/api/hosts")
    now = time.time()
    for h in hosts:
        since = h.get("stale_since")
        h["stale"] = f"{max(0, int(now - since))} s" if since else ""
    emit(ctx, hosts, COLUMNS)


@app.command("add")
def add(ctx: typer.Context, name: str, uri: str) -> None:
    """Add a host by libvirt URI (needs the admin role), e.g.
    `kvm-manager host add kvm2 qemu+ssh://root@kvm2/system`. It connects in the background."""
    with client(ctx) as api:
        emit(ctx, api.post("/api/hosts", json={"name": name, "uri": uri}))


@app.command("show")
def show(ctx: typer.Context, name: str) -> None:
    """Show a host: status and, when connected, versions, CPU, memory and KVM or TCG."""
    with client(ctx) as api:
        data: dict[str, Any] = api.get(_path(name))
        if data.get("status") == "connected":
            details = api.get(f"{_path(name)}/info")
            accel = details["accel"]
            cpu = details["cpu"]
            data.update(
                hostname=details["hostname"],
                libvirt_version=details["libvirt_version"],
                hypervisor=f"{details['driver']} {details['hypervisor_version'] or ''}".strip(),
                cpus=f"{cpu['count']} x {cpu['model']} @ {cpu['mhz']} MHz",
                memory_mib=details["memory_mib"],
                accel=accel["accel"],
                accel_reason=accel["reason"],
            )
    emit(ctx, data)


@app.command("remove")
def remove(ctx: typer.Context, name: str) -> None:
    """Forget a host (needs the admin role); its VMs stay untouched in libvirt."""
    act_and_say(ctx, "DELETE", _path(name), f"host {name} removed")
