"""`kvm-manager portfwd ...`: port forwards of VMs on passt user-mode networking."""

from __future__ import annotations

from typing import Any

import typer

from kvmmanager.cli.api_client import client
from kvmmanager.cli.helpers import HOST_OPTION, api_get, api_post
from kvmmanager.cli.output import emit
from kvmmanager.cli.urls import q

NAME = "portfwd"
app = typer.Typer(help="Port forwards of passt (user-mode) NICs.", no_args_is_help=True)


@app.command("list")
def list_forwards(ctx: typer.Context, vm: str, host: str = HOST_OPTION) -> None:
    nics = api_get(ctx, f"/api/hosts/{q(host)}/vms/{q(vm)}/port-forwards")
    rows = [{"mac": n["mac"], **f} for n in nics for f in n["forwards"]]
    emit(ctx, rows, ["mac", "proto", "address", "host_port", "host_port_end", "guest_port"])


@app.command("add")
def add(
    ctx: typer.Context,
    vm: str,
    proto: str,
    host_port: int,
    guest_port: int = typer.Argument(None, help="Defaults to HOST_PORT."),
    end: int = typer.Option(None, "--end", help="Last host port of a range."),
    address: str = typer.Option(None, "--address", help="Host address to listen on."),
    mac: str = typer.Option(None, "--mac", help="Which passt NIC."),
    host: str = HOST_OPTION,
) -> None:
    """Forward host PROTO HOST_PORT to the guest (next boot when running)."""
    body: dict[str, Any] = {"proto": proto, "host_port": host_port, "guest_port": guest_port,
                            "host_port_end": end, "address": address, "mac": mac}  # fmt: skip
    emit(ctx, api_post(ctx, f"/api/hosts/{q(host)}/vms/{q(vm)}/port-forwards", body))


@app.command("rm")
def remove(
    ctx: typer.Context,
    vm: str,
    proto: str,
    host_port: int,
    mac: str = typer.Option(None, "--mac", help="Which passt NIC."),
    host: str = HOST_OPTION,
) -> None:
    path = f"/api/hosts/{q(host)}/vms/{q(vm)}/port-forwards/{q(proto)}/{host_port}"
    with client(ctx) as api:
        emit(ctx, api.delete(path, params={"mac": mac} if mac else {}))
