"""The VM page's Devices tab: host devices, displays (SPICE .vv), passt port forwards.
Each action calls the same service as the REST API and re-renders the tab with a toast."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from kvmmanager.api.deps import ManagerDep, OperatorUser
from kvmmanager.core.errors import KvmmError
from kvmmanager.services.manager import Manager
from kvmmanager.services.networks.port_forwards import ForwardRule
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.web.templating import render, toast_headers

router = APIRouter(include_in_schema=False)
BASE = "/vms/{host}/{vm}/devices"


async def _tab(
    request: Request, manager: Manager, host: str, vm: str, message: str | None = None
) -> Response:
    info = manager.vms.get(host, vm)
    errors = []
    try:
        devices = await manager.hostdevs.list(host)
    except KvmmError as e:
        devices, errors = [], [e.message]
    forwards = await manager.port_forwards.list(host, vm)
    # The persistent definition: a display change shows at once, not after the next boot.
    defined = Domain.from_xml(await manager.vms.xml(host, vm, inactive=True))
    headers = toast_headers(message) if message else None
    return render(
        request, "vms/_devices.html", headers=headers, vm=info, devices=devices,
        forwards=forwards, errors=errors,
        graphics={g.type for g in defined.devices.graphics},
        usb_redirection=any(r.type == "spicevmc" for r in defined.devices.redirdevs),
    )  # fmt: skip


async def _act(request: Request, manager: Manager, host: str, vm: str, call: Any) -> Response:
    try:
        result = await call
    except KvmmError as e:
        return Response(status_code=422, headers=toast_headers(e.message, "error"))
    return await _tab(request, manager, host, vm, result.get("message") or "Done")


@router.get(BASE, name="web.vm_devices", response_class=HTMLResponse)
async def devices_tab(request: Request, host: str, vm: str, manager: ManagerDep) -> Response:
    return await _tab(request, manager, host, vm)


@router.post(BASE + "/attach", name="web.vm_hostdev_attach", response_class=HTMLResponse)
async def hostdev_attach(
    request: Request, host: str, vm: str,
    device: Annotated[str, Form()],
    *, group: Annotated[bool, Form()] = False,
    manager: ManagerDep,
    _user: OperatorUser,
) -> Response:  # fmt: skip
    return await _act(request, manager, host, vm, manager.hostdevs.attach(host, vm, device,
                                                                          group=group))  # fmt: skip


@router.post(BASE + "/detach", name="web.vm_hostdev_detach", response_class=HTMLResponse)
async def hostdev_detach(
    request: Request, host: str, vm: str,
    device: Annotated[str, Form()],
    manager: ManagerDep,
    _user: OperatorUser,
) -> Response:  # fmt: skip
    return await _act(request, manager, host, vm, manager.hostdevs.detach(host, vm, device))


@router.post(BASE + "/graphics", name="web.vm_graphics", response_class=HTMLResponse)
async def graphics(
    request: Request, host: str, vm: str,
    *, vnc: Annotated[bool, Form()] = False,
    spice: Annotated[bool, Form()] = False,
    usb_redirection: Annotated[bool, Form()] = False,
    manager: ManagerDep,
    _user: OperatorUser,
) -> Response:  # fmt: skip
    # The form always says what it wants: an unticked box removes the redirection slots.
    change = manager.spice.set_graphics(host, vm, vnc, spice, usb_redirection)
    return await _act(request, manager, host, vm, change)


@router.post(BASE + "/forwards", name="web.vm_forward_add", response_class=HTMLResponse)
async def forward_add(
    request: Request, host: str, vm: str,
    proto: Annotated[str, Form()],
    host_port: Annotated[int, Form()],
    *, guest_port: Annotated[int | None, Form()] = None,
    manager: ManagerDep,
    _user: OperatorUser,
) -> Response:  # fmt: skip
    # proto is the form's text; the service refuses anything but tcp/udp in its words.
    rule = ForwardRule(proto=proto, host_port=host_port, guest_port=guest_port)  # type: ignore[arg-type]
    return await _act(request, manager, host, vm, manager.port_forwards.add(host, vm, rule))


@router.post(BASE + "/forwards/remove", name="web.vm_forward_rm", response_class=HTMLResponse)
async def forward_remove(
    request: Request, host: str, vm: str,
    proto: Annotated[str, Form()],
    host_port: Annotated[int, Form()],
    manager: ManagerDep,
    _user: OperatorUser,
) -> Response:  # fmt: skip
    call = manager.port_forwards.remove(host, vm, proto, host_port)
    return await _act(request, manager, host, vm, call)
