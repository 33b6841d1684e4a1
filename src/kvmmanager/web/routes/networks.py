"""Network pages: list, create (NAT, isolated, routed, open), start/stop, DHCP leases."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from kvmmanager.api.deps import (
    AdminUser,
    CurrentUser,
    ManagerDep,
)
from kvmmanager.api.routers.networks import check_network_action_role
from kvmmanager.core.errors import InvalidInput, KvmmError, PermissionDenied
from kvmmanager.services.manager import Manager
from kvmmanager.services.networks.service import NetworkSpec
from kvmmanager.web.templating import refresh_with_toast, render

router = APIRouter(include_in_schema=False)


async def _page(
    request: Request,
    manager: Manager,
    host: str,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    hosts = [h.name for h in manager.registry.all()]
    networks, error = [], ""
    try:
        networks = await manager.networks.list(host)
    except KvmmError as e:
        error = e.message
    return render(
        request,
        "networks/list.html",
        active="networks",
        hosts=hosts,
        host=host,
        networks=networks,
        error=error,
        errors=errors or {},
        form=form or {},
    )


@router.get("/networks", name="web.networks", response_class=HTMLResponse)
async def networks(
    request: Request, *, host: str | None = None, manager: ManagerDep
) -> HTMLResponse:
    hosts = [h.name for h in manager.registry.all()]
    return await _page(request, manager, host or (hosts[0] if hosts else ""))


@router.post("/networks/{host}", name="web.network_create", response_class=HTMLResponse)
async def create_network(
    request: Request,
    host: str,
    name: Annotated[str, Form()],
    *,
    forward: Annotated[str, Form()] = "nat",
    address: Annotated[str, Form()] = "",
    prefix: Annotated[int, Form()] = 24,
    dhcp_start: Annotated[str, Form()] = "",
    dhcp_end: Annotated[str, Form()] = "",
    manager: ManagerDep,
    _user: AdminUser,
) -> Response:
    form = {k: str(v) for k, v in (await request.form()).items()}
    try:
        spec = NetworkSpec(
            name=name,
            forward=forward,
            address=address or None,
            prefix=prefix,
            dhcp_start=dhcp_start or None,
            dhcp_end=dhcp_end or None,
        )
        await manager.networks.define(host, spec)
    except ValidationError as e:
        first = e.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "name"
        return await _page(request, manager, host, {field: first["msg"]}, form)
    except InvalidInput as e:
        return await _page(request, manager, host, {e.field or "name": e.message}, form)
    return refresh_with_toast(f"Network {name} created")


@router.post("/networks/{host}/{net}/actions/{action}", name="web.network_action")
async def network_action(
    host: str,
    net: str,
    action: str,
    manager: ManagerDep,
    user: CurrentUser,
) -> Response:
    service = manager.networks
    if action == "delete":
        # Defining and deleting networks is an admin's job, as in the REST API.
        if not user.has_role("admin"):
            raise PermissionDenied(f"deleting a network needs the admin role (you are {user.role})")
        await service.delete(host, net)
        return refresh_with_toast(f"network {net}: {action} done")
    check_network_action_role(user, action)  # the REST route's rule: admins only
    if action == "start":
        await service.start(host, net)
    elif action == "stop":
        await service.stop(host, net)
    else:
        await service.set_autostart(host, net, action == "autostart")
    return refresh_with_toast(f"network {net}: {action} done")


@router.get("/networks/{host}/{net}/leases", name="web.network_leases", response_class=HTMLResponse)
async def leases(request: Request, host: str, net: str, manager: ManagerDep) -> HTMLResponse:
    return render(
        request, "networks/_leases.html", net=net, leases=await manager.networks.leases(host, net)
    )
