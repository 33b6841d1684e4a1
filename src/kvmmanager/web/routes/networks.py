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
from kvmmanager.web.routes._feedback import in_form_words
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


# The service's field names, as the create form labels them: its messages say "dhcp_start
# ... is after dhcp_end" or "address must be...", the person sees "DHCP from"/"DHCP to" and
# "Host address on the network". Only a message's leading field name is replaced for the
# plain words ("the network's address" stays as it is).
DHCP_LABELS = {"dhcp_start": "DHCP from", "dhcp_end": "DHCP to"}
LEADING_LABELS = {"address": "Host address on the network", "prefix": "Prefix length"}


def _in_form_words(field: str, message: str) -> str:
    message = in_form_words(message, DHCP_LABELS)
    label = LEADING_LABELS.get(field)
    if label and message.startswith(f"{field} "):
        message = label + message[len(field) :]
    return message


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
        return await _page(
            request, manager, host, {field: _in_form_words(field, first["msg"])}, form
        )
    except InvalidInput as e:
        field = e.field or "name"
        return await _page(request, manager, host, {field: _in_form_words(field, e.message)}, form)
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
