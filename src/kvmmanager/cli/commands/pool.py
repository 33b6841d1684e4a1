"""`kvm-manager pool ...`: storage pools of a host."""

from __future__ import annotations

from typing import Any

import typer

from kvmmanager.cli.helpers import (
    HOST_OPTION,
    act_and_say,
    action_commands,
    api_get,
    api_post,
    emit_sized,
)
from kvmmanager.cli.urls import q

NAME = "pool"
app = typer.Typer(help="Storage pools: list, create, start, stop, delete.", no_args_is_help=True)

COLUMNS = ["name", "type", "state", "autostart", "capacity", "allocation", "available", "target"]


def _base(host: str) -> str:
    return f"/api/hosts/{q(host)}/pools"


def _emit(ctx: typer.Context, data: Any) -> None:
    emit_sized(ctx, data, COLUMNS, ("capacity", "allocation", "available"))


@app.command("list")
def list_pools(ctx: typer.Context, host: str = HOST_OPTION) -> None:
    """List the host's pools with their capacity figures."""
    _emit(ctx, api_get(ctx, _base(host)))


@app.command("show")
def show(ctx: typer.Context, name: str, host: str = HOST_OPTION) -> None:
    """Show one pool."""
    _emit(ctx, api_get(ctx, f"{_base(host)}/{q(name)}"))


@app.command("create")
def create(
    ctx: typer.Context,
    name: str,
    type: str = typer.Option("dir", "--type", "-t", help="dir, logical or netfs."),
    target: str | None = typer.Option(None, "--target", help="Directory (dir) or mount point."),
    source_name: str | None = typer.Option(None, "--source-name", help="Volume group (logical)."),
    device: list[str] = typer.Option([], "--device", help="Physical volume (logical), repeat."),
    source_host: str | None = typer.Option(None, "--source-host", help="NFS/CIFS server."),
    source_path: str | None = typer.Option(None, "--source-path", help="Export or share."),
    source_format: str = typer.Option("auto", "--source-format", help="auto, nfs, cifs..."),
    build: bool = typer.Option(True, "--build/--no-build", help="Create the storage first."),
    start: bool = typer.Option(True, "--start/--no-start"),
    autostart: bool = typer.Option(True, "--autostart/--no-autostart"),
    host: str = HOST_OPTION,
) -> None:
    """Define a pool (needs the admin role); builds, starts and autostarts it by default."""
    body = {
        "name": name,
        "type": type,
        "target": target,
        "source_name": source_name,
        "source_devices": device,
        "source_host": source_host,
        "source_path": source_path,
        "source_format": source_format,
        "build": build,
        "start": start,
        "autostart": autostart,
    }
    _emit(ctx, api_post(ctx, _base(host), body))


def _action(ctx: typer.Context, host: str, name: str, action: str) -> None:
    _emit(ctx, api_post(ctx, f"{_base(host)}/{q(name)}/actions/{action}"))


action_commands(
    app,
    _action,
    {
        "start": "Start (activate) a pool (needs the admin role).",
        "stop": "Stop (deactivate) a pool; its volumes stay (needs the admin role).",
        "build": "Create the pool's storage (directory, volume group) on the host.",
        "refresh": "Re-read the pool's volumes and capacity.",
        "autostart": "Start the pool when libvirtd starts (or not, with --off; needs the admin "
        "role).",
    },
)


@app.command("delete")
def delete(
    ctx: typer.Context,
    name: str,
    delete_volumes: bool = typer.Option(
        False, "--delete-volumes", help="Also delete every volume and the pool's storage."
    ),
    force: bool = typer.Option(False, "--force", help="Even when a VM uses a volume of it."),
    host: str = HOST_OPTION,
) -> None:
    """Stop and undefine a pool (needs the admin role)."""
    params = {"delete_volumes": delete_volumes, "force": force}
    act_and_say(ctx, "DELETE", f"{_base(host)}/{q(name)}", f"pool {name} deleted", params=params)
