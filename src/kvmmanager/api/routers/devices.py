"""Host devices, VM displays and port forwards.

- ``GET /api/hosts/{host}/devices``: the host's PCI and USB devices (viewers may read).
- ``/api/hosts/{host}/vms/{vm}/hostdevs``: PCI passthrough and USB devices of a VM.
- ``PUT .../graphics``: VNC and/or SPICE; ``POST .../spice/vv``: a remote-viewer file with
  a one-time password. A POST because it changes the VM (sets the password): operators on
  their own (or unowned) VMs only, like every write; viewers never see a password.
- ``/api/hosts/{host}/vms/{vm}/port-forwards``: passt port forwards.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from kvmmanager.api.deps import ManagerDep
from kvmmanager.api.schemas.common import ERROR_RESPONSES
from kvmmanager.api.schemas.devices import (
    ForwardIn,
    GraphicsSet,
    HostdevAttach,
    HostDeviceOut,
    PasstNicOut,
)
from kvmmanager.api.schemas.vms import EditOut
from kvmmanager.services.networks.port_forwards import ForwardRule

router = APIRouter(tags=["devices"], responses=ERROR_RESPONSES)
VM = "/api/hosts/{host}/vms/{vm}"


@router.get("/api/hosts/{host}/devices", name="devices.list", response_model=list[HostDeviceOut])
async def list_devices(
    host: str,
    *,
    kind: Literal["pci", "usb"] | None = None,
    manager: ManagerDep,
) -> list[dict[str, Any]]:
    """PCI and USB node devices, with their IOMMU group and the VMs that have them."""
    return [d.to_dict() for d in await manager.hostdevs.list(host, kind)]


@router.get(VM + "/hostdevs", name="devices.vm_list", response_model=list[HostDeviceOut])
async def vm_hostdevs(host: str, vm: str, manager: ManagerDep) -> list[dict[str, Any]]:
    return [d.to_dict() for d in await manager.hostdevs.of_vm(host, vm)]


@router.post(VM + "/hostdevs", name="devices.attach", response_model=EditOut)
async def attach(host: str, vm: str, body: HostdevAttach, manager: ManagerDep) -> dict[str, Any]:
    """Give a host device to the VM (live and persistent when running). 409 when another VM
    has it, it is a bridge or root hub, or its IOMMU group is incomplete (see `group`)."""
    return await manager.hostdevs.attach(host, vm, body.device, body.usb_match, body.group)


@router.delete(VM + "/hostdevs/{device}", name="devices.detach", response_model=EditOut)
async def detach(host: str, vm: str, device: str, manager: ManagerDep) -> dict[str, Any]:
    return await manager.hostdevs.detach(host, vm, device)


@router.put(VM + "/graphics", name="devices.graphics", response_model=EditOut)
async def set_graphics(
    host: str, vm: str, body: GraphicsSet, manager: ManagerDep
) -> dict[str, Any]:
    """Which displays the VM has from its next boot: VNC (the browser console), SPICE, or
    both, and SPICE USB redirection. 422 when the host's QEMU has no SPICE."""
    return await manager.spice.set_graphics(host, vm, body.vnc, body.spice, body.usb_redirection)


@router.post(
    VM + "/spice/vv",
    name="devices.spice_vv",
    response_class=Response,
    responses={200: {"content": {"application/x-virt-viewer": {}}}},
)
async def spice_vv(host: str, vm: str, manager: ManagerDep) -> Response:
    """A .vv file for remote-viewer with a fresh password valid for `spice.ticket_seconds`
    (the running VM's SPICE display gets it now; it is not stored anywhere)."""
    ticket = await manager.spice.vv_file(host, vm)
    return Response(
        ticket.content,
        media_type="application/x-virt-viewer",
        headers={
            "Content-Disposition": f'attachment; filename="{ticket.filename}"',
            "Cache-Control": "no-store",
            "X-Ticket-Expires": ticket.expires_at,
        },
    )


@router.get(VM + "/port-forwards", name="devices.forwards", response_model=list[PasstNicOut])
async def forwards(host: str, vm: str, manager: ManagerDep) -> list[dict[str, Any]]:
    """The VM's passt NICs and their forwards (persistent definition)."""
    return await manager.port_forwards.list(host, vm)


@router.post(VM + "/port-forwards", name="devices.forward_add", response_model=EditOut)
async def add_forward(host: str, vm: str, body: ForwardIn, manager: ManagerDep) -> dict[str, Any]:
    """Forward host port(s) to the guest through its passt NIC (next boot when running).
    422 for NICs on NAT networks or bridges: see docs/operations.md."""
    rule = ForwardRule(
        proto=body.proto,
        host_port=body.host_port,
        guest_port=body.guest_port,
        host_port_end=body.host_port_end,
        address=body.address,
    )
    return await manager.port_forwards.add(host, vm, rule, body.mac)


@router.delete(
    VM + "/port-forwards/{proto}/{host_port}", name="devices.forward_remove", response_model=EditOut
)
async def remove_forward(
    host: str,
    vm: str,
    proto: Literal["tcp", "udp"],
    host_port: int,
    *,
    mac: str | None = Query(None),
    manager: ManagerDep,
) -> dict[str, Any]:
    return await manager.port_forwards.remove(host, vm, proto, host_port, mac)
