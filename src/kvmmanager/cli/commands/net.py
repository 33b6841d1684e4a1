"""`kvm-manager net ...`: virtual networks of a host and their DHCP leases."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer

from kvmmanager.cli.api_client import client
from kvmmanager.cli.commands._storage_common import HOST_OPTION
from kvmmanager.cli.output import emit, info, wants_json
from kvmmanager.cli.urls import q

NAME = "net"
app = typer.Typer(
    help="Virtual networks: list, create, start, stop, delete, leases.", no_args_is_help=True
)

COLUMNS = [
    "name",
    "active",
    "autostart",
    "forward",
    "bridge",
    "address",
    "prefix",
    "dhcp_start",
    "dhcp_end",
]
LEASE_COLUMNS = ["mac", "ip", "prefix", "hostname", "expires", "iface"]


def _base(host: str) -> str:
    return f"/api/hosts/{q(host)}/networks"


@app.command("list")
def list_networks(ctx: typer.Context, host: str = HOST_OPTION) -> None:
    """List the host's networks."""
    with client(ctx) as api:
        emit(ctx, api.get(_base(host)), COLUMNS)


@app.command("show")
def show(ctx: typer.Context, name: str, host: str = HOST_OPTION) -> None:
    """Show one network."""
    with client(ctx) as api:
        emit(ctx, api.get(f"{_base(host)}/{q(name)}"))


@app.command("create")
def create(
    ctx: typer.Context,
    name: str,
    forward: str = typer.Option("nat", "--forward", help="nat, route, open or isolated."),
    address: str | None = typer.Option(None, "--address", help="Host address, e.g. 10.0.5.1."),
    prefix: int = typer.Option(24, "--prefix", help="Subnet prefix length."),
    dhcp_start: str | None = typer.Option(None, "--dhcp-start"),
    dhcp_end: str | None = typer.Option(None, "--dhcp-end"),
    bridge: str | None = typer.Option(None, "--bridge", help="Bridge name (default: libvirt's)."),
    forward_dev: str | None = typer.Option(None, "--forward-dev", help="Uplink (nat/route)."),
    domain: str | None = typer.Option(None, "--domain", help="DNS domain of the network."),
    start: bool = typer.Option(True, "--start/--no-start"),
    autostart: bool = typer.Option(True, "--autostart/--no-autostart"),
    host: str = HOST_OPTION,
) -> None:
    """Define a network (needs the admin role); starts and autostarts it by default."""
    body: dict[str, Any] = {
        "name": name,
        "forward": forward,
        "address": address,
        "prefix": prefix,
        "dhcp_start": dhcp_start,
        "dhcp_end": dhcp_end,
        "bridge": bridge,
        "forward_dev": forward_dev,
        "domain": domain,
        "start": start,
        "autostart": autostart,
    }
    with client(ctx) as api:
        emit(ctx, api.post(_base(host), json=body))


def _action(ctx: typer.Context, host: str, name: str, action: str) -> None:
    with client(ctx) as api:
        emit(ctx, api.post(f"{_base(host)}/{q(name)}/actions/{action}"))


@app.command("start")
def start_cmd(ctx: typer.Context, name: str, host: str = HOST_OPTION) -> None:
    """Start a network."""
    _action(ctx, host, name, "start")


@app.command("stop")
def stop_cmd(ctx: typer.Context, name: str, host: str = HOST_OPTION) -> None:
    """Stop a network (VMs on it lose connectivity)."""
    _action(ctx, host, name, "stop")


@app.command("autostart")
def autostart_cmd(
    ctx: typer.Context,
    name: str,
    off: bool = typer.Option(False, "--off", help="Disable autostart."),
    host: str = HOST_OPTION,
) -> None:
    """Start the network when libvirtd starts (or not, with --off)."""
    _action(ctx, host, name, "noautostart" if off else "autostart")


@app.command("delete")
def delete(
    ctx: typer.Context,
    name: str,
    force: bool = typer.Option(False, "--force", help="Even when running VMs use it."),
    host: str = HOST_OPTION,
) -> None:
    """Stop and undefine a network (needs the admin role)."""
    with client(ctx) as api:
        api.delete(f"{_base(host)}/{q(name)}", params={"force": force})
    info(f"network {name} deleted")


@app.command("leases")
def leases(
    ctx: typer.Context,
    name: str,
    mac: str | None = typer.Option(None, "--mac", help="Only this MAC address."),
    host: str = HOST_OPTION,
) -> None:
    """List the network's DHCP leases (EXPIRES in UTC; --json keeps Unix seconds)."""
    params = {"mac": mac} if mac else None
    with client(ctx) as api:
        rows = api.get(f"{_base(host)}/{q(name)}/leases", params=params)
    if wants_json(ctx):
        emit(ctx, rows)
        return
    emit(ctx, [{**r, "expires": lease_time(r.get("expires"))} for r in rows], LEASE_COLUMNS)


def lease_time(epoch: int | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
