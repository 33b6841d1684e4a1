"""Virtual networks of a host: /api/hosts/{host}/networks.

Roles: viewers and operators read (networks, leases); defining, deleting, starting,
stopping a network and its autostart need admin: a network creates bridges and firewall
rules on the host, and stopping one cuts every VM on it (other users' too) off the
network (docs/security.md).
"""

from __future__ import annotations

from typing import Literal, get_args

from fastapi import APIRouter, Query, Response, status

from kvmmanager.api.deps import ADMIN_ONLY, CurrentUser, ManagerDep, no_content
from kvmmanager.api.schemas.common import ERROR_RESPONSES
from kvmmanager.api.schemas.networks import LeaseOut, NetworkCreate, NetworkOut
from kvmmanager.core.errors import InvalidInput, PermissionDenied
from kvmmanager.services.networks.service import NetworkSpec

router = APIRouter(
    prefix="/api/hosts/{host}/networks", tags=["networks"], responses=ERROR_RESPONSES
)

NetworkAction = Literal["start", "stop", "autostart", "noautostart"]


def check_network_action_role(user: CurrentUser, action: str) -> None:
    """The one rule for network state actions, on the REST route and the web form (and so
    the CLI): every one is an admin's. An unknown action is bad input for every role (the
    REST route's type already says so with a 422; the web form's path is a plain string),
    not a permission question."""
    if action not in get_args(NetworkAction):
        known = ", ".join(get_args(NetworkAction))
        raise InvalidInput(f"unknown network action '{action}' (one of {known})", field="action")
    if not user.has_role("admin"):
        raise PermissionDenied(
            f"network action '{action}' needs the admin role (you are {user.role})"
        )


# The same REST shape as pools.py (list, define, get, delete, actions), on purpose: another
# resource, its own OpenAPI operations and service; each handler is one service call.
@router.get("", name="networks.list", response_model=list[NetworkOut])
async def list_networks(host: str, manager: ManagerDep) -> list[dict]:
    return [n.to_dict() for n in await manager.networks.list(host)]


@router.post(
    "",
    name="networks.create",
    response_model=NetworkOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=ADMIN_ONLY,
)
async def create_network(host: str, body: NetworkCreate, manager: ManagerDep) -> dict:
    spec = NetworkSpec.model_validate(body.model_dump())
    return (await manager.networks.define(host, spec)).to_dict()


@router.get("/{net}", name="networks.get", response_model=NetworkOut)
async def get_network(host: str, net: str, manager: ManagerDep) -> dict:
    return (await manager.networks.get(host, net)).to_dict()


@router.delete(
    "/{net}",
    name="networks.delete",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=ADMIN_ONLY,
)
async def delete_network(
    host: str, net: str, *, force: bool = False, manager: ManagerDep
) -> Response:
    """Stop and undefine; a network a running VM is plugged into needs `force=true`."""
    await manager.networks.delete(host, net, force=force)
    return no_content()


@router.post("/{net}/actions/{action}", name="networks.action", response_model=NetworkOut)
async def network_action(
    host: str, net: str, action: NetworkAction, manager: ManagerDep, user: CurrentUser
) -> dict:
    """403 for anyone but an admin (docs/security.md)."""
    check_network_action_role(user, action)
    svc = manager.networks
    if action == "start":
        result = await svc.start(host, net)
    elif action == "stop":
        result = await svc.stop(host, net)
    else:
        result = await svc.set_autostart(host, net, action == "autostart")
    return result.to_dict()


@router.get("/{net}/leases", name="networks.leases", response_model=list[LeaseOut])
async def list_leases(
    host: str,
    net: str,
    *,
    mac: str | None = Query(default=None, max_length=17),
    manager: ManagerDep,
) -> list[dict]:
    return [lease.to_dict() for lease in await manager.networks.leases(host, net, mac)]
