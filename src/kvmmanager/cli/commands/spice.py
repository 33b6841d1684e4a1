"""`kvm-manager spice ...`: SPICE displays and remote-viewer files."""

from __future__ import annotations

from pathlib import Path

import typer

from kvmmanager.cli.api_client import client
from kvmmanager.cli.helpers import HOST_OPTION, api_post
from kvmmanager.cli.output import emit, info
from kvmmanager.cli.urls import q

NAME = "spice"
app = typer.Typer(help="SPICE displays and .vv files for remote-viewer.", no_args_is_help=True)


@app.command("set")
def set_graphics(
    ctx: typer.Context,
    vm: str,
    spice: bool = typer.Option(True, "--spice/--no-spice", help="Have a SPICE display."),
    vnc: bool = typer.Option(True, "--vnc/--no-vnc", help="Keep VNC (the browser console)."),
    host: str = HOST_OPTION,
) -> None:
    """Choose the VM's displays (from its next boot)."""
    with client(ctx) as api:
        body = {"vnc": vnc, "spice": spice}
        emit(ctx, api.put(f"/api/hosts/{q(host)}/vms/{q(vm)}/graphics", json=body))


@app.command("vv")
def vv(
    ctx: typer.Context,
    vm: str,
    output: Path = typer.Option(None, "--output", "-o", help="File to write (default VM.vv)."),
    host: str = HOST_OPTION,
) -> None:
    """Write a .vv file with a one-time password; open it with remote-viewer."""
    text = api_post(ctx, f"/api/hosts/{q(host)}/vms/{q(vm)}/spice/vv")
    path = output or Path(f"{vm}.vv")
    path.touch(mode=0o600)
    path.write_text(text)
    info(f"wrote {path}: remote-viewer {path}")
