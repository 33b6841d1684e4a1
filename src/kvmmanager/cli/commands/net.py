"""`kvm-manager net ...`: virtual networks of a host and their DHCP leases."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer

from kvmmanager.cli.helpers import HOST_OPTION, act_and_say, action_commands, api_get, api_post
from kvmmanager.cli.output import emit, wants_json
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
    emit(ctx, api_get(ctx, _base(host)), COLUMNS)


@app.command("show")
def show(ctx: typer.Context, name: str, host: str = HOST_OPTION) -> None:
    """Show one network."""
    emit(ctx, api_get(ctx, f"{_base(host)}/{q(name)}"))


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
    emit(ctx, api_post(ctx, _base(host), body))


# Alike pool.py's on purpose: the same REST shape (create body, /actions/ACTION) over
# another resource; what both do alike is helpers.action_commands.
def _action(ctx: typer.Context, host: str, name: str, action: str) -> None:
    emit(ctx, api_post(ctx, f"{_base(host)}/{q(name)}/actions/{action}"))


action_commands(
    app,
    _action,
    {
        "start": "Start a network.",
        "stop": "Stop a network (VMs on it lose connectivity).",
        "autostart": "Start the network when libvirtd starts (or not, with --off).",
    },
)


@app.command("delete")
def delete(
    ctx: typer.Context,
    name: str,
    force: bool = typer.Option(False, "--force", help="Even when running VMs use it."),
    host: str = HOST_OPTION,
) -> None:
    """Stop and undefine a network (needs the admin role)."""
    path = f"{_base(host)}/{q(name)}"
    act_and_say(ctx, "DELETE", path, f"network {name} deleted", params={"force": force})


@app.command("leases")
def leases(
    ctx: typer.Context,
    name: str,
    mac: str | None = typer.Option(None, "--mac", help="Only this MAC address."),
    host: str = HOST_OPTION,
) -> None:
    """List the network's DHCP leases (EXPIRES in UTC; --json keeps Unix seconds)."""
    params = {"mac": mac} if mac else None
    rows = api_get(ctx, f"{_base(host)}/{q(name)}/leases", params=params)
    if wants_json(ctx):
        emit(ctx, rows)
        return
    emit(ctx, [{**r, "expires": lease_time(r.get("expires"))} for r in rows], LEASE_COLUMNS)


def lease_time(epoch: int | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
