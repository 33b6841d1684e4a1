"""`kvm-manager pool ...`: storage pools of a host."""

from __future__ import annotations

from typing import Any

import typer

from kvmmanager.cli.api_client import client
from kvmmanager.cli.commands._storage_common import HOST_OPTION, fmt_bytes
from kvmmanager.cli.output import emit, info
from kvmmanager.cli.urls import q

NAME = "pool"
app = typer.Typer(help="Storage pools: list, create, start, stop, delete.", no_args_is_help=True)

COLUMNS = ["name", "type", "state", "autostart", "capacity", "allocation", "available", "target"]


def _human(pool: dict[str, Any]) -> dict[str, Any]:
    out = dict(pool)
    for key in ("capacity", "allocation", "available"):
        out[key] = fmt_bytes(pool.get(key))
    return out


def _emit(ctx: typer.Context, data: Any) -> None:
    from kvmmanager.cli.output import wants_json

    if wants_json(ctx):
        emit(ctx, data)
    elif isinstance(data, list):
        emit(ctx, [_human(p) for p in data], COLUMNS)
    else:
        emit(ctx, _human(data))


@app.command("list")
def list_pools(ctx: typer.Context, host: str = HOST_OPTION) -> None:
    """List the host's pools with their capacity figures."""
    with client(ctx) as api:
        _emit(ctx, api.get(f"/api/hosts/{q(host)}/pools"))


@app.command("show")
def show(ctx: typer.Context, name: str, host: str = HOST_OPTION) -> None:
    """Show one pool."""
    with client(ctx) as api:
        _emit(ctx, api.get(f"/api/hosts/{q(host)}/pools/{q(name)}"))


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
    with client(ctx) as api:
        _emit(ctx, api.post(f"/api/hosts/{q(host)}/pools", json=body))


def _action(ctx: typer.Context, host: str, name: str, action: str) -> None:
    with client(ctx) as api:
        _emit(ctx, api.post(f"/api/hosts/{q(host)}/pools/{q(name)}/actions/{action}"))


@app.command("start")
def start(ctx: typer.Context, name: str, host: str = HOST_OPTION) -> None:
    """Start (activate) a pool (needs the admin role)."""
    _action(ctx, host, name, "start")


@app.command("stop")
def stop(ctx: typer.Context, name: str, host: str = HOST_OPTION) -> None:
    """Stop (deactivate) a pool; its volumes stay (needs the admin role)."""
    _action(ctx, host, name, "stop")


@app.command("build")
def build_cmd(ctx: typer.Context, name: str, host: str = HOST_OPTION) -> None:
    """Create the pool's storage (directory, volume group) on the host."""
    _action(ctx, host, name, "build")


@app.command("refresh")
def refresh(ctx: typer.Context, name: str, host: str = HOST_OPTION) -> None:
    """Re-read the pool's volumes and capacity."""
    _action(ctx, host, name, "refresh")


@app.command("autostart")
def autostart_cmd(
    ctx: typer.Context,
    name: str,
    off: bool = typer.Option(False, "--off", help="Disable autostart."),
    host: str = HOST_OPTION,
) -> None:
    """Start the pool when libvirtd starts (or not, with --off; needs the admin role)."""
    _action(ctx, host, name, "noautostart" if off else "autostart")


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
    with client(ctx) as api:
        api.delete(f"/api/hosts/{q(host)}/pools/{q(name)}", params=params)
    info(f"pool {name} deleted")
