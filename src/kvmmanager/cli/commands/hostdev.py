"""`kvm-manager hostdev ...`: host PCI/USB devices and giving them to VMs."""

from __future__ import annotations

import typer

from kvmmanager.cli.api_client import client
from kvmmanager.cli.helpers import HOST_OPTION, api_post
from kvmmanager.cli.output import emit
from kvmmanager.cli.urls import q

NAME = "hostdev"
app = typer.Typer(help="Host PCI and USB devices (passthrough).", no_args_is_help=True)
COLUMNS = ["name", "kind", "address", "vendor_name", "product_name", "iommu_group",
           "attached_to", "refused"]  # fmt: skip


@app.command("list")
def list_devices(
    ctx: typer.Context,
    kind: str = typer.Option(None, "--kind", help="pci or usb."),
    host: str = HOST_OPTION,
) -> None:
    """The host's PCI and USB devices, their IOMMU group and which VMs have them."""
    with client(ctx) as api:
        params = {"kind": kind} if kind else {}
        emit(ctx, api.get(f"/api/hosts/{q(host)}/devices", params=params), COLUMNS)


@app.command("attach")
def attach(
    ctx: typer.Context,
    vm: str,
    device: str,
    by_address: bool = typer.Option(False, "--by-address", help="USB: pin bus/device."),
    group: bool = typer.Option(False, "--group", help="PCI: attach its whole IOMMU group."),
    host: str = HOST_OPTION,
) -> None:
    """Give DEVICE (a name from `hostdev list`) to VM."""
    body = {"device": device, "usb_match": "address" if by_address else "id", "group": group}
    emit(ctx, api_post(ctx, f"/api/hosts/{q(host)}/vms/{q(vm)}/hostdevs", body))


@app.command("detach")
def detach(ctx: typer.Context, vm: str, device: str, host: str = HOST_OPTION) -> None:
    """Take DEVICE away from VM."""
    with client(ctx) as api:
        emit(ctx, api.delete(f"/api/hosts/{q(host)}/vms/{q(vm)}/hostdevs/{q(device)}"))
