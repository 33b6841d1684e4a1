"""Storage pools of a host: /api/hosts/{host}/pools.

Roles: viewers read; operators refresh a pool (re-read its volumes); defining, deleting,
starting, stopping, building a pool and its autostart need admin: a pool names host
storage (a directory, a disk, an NFS export) that libvirtd will create, mount or wipe as
root, and stopping one cuts every VM using it off from its disks (docs/security.md).
"""

from __future__ import annotations

from typing import Literal, get_args

from fastapi import APIRouter, Response, status

from kvmmanager.api.deps import ADMIN_ONLY, CurrentUser, ManagerDep, no_content
from kvmmanager.api.schemas.common import ERROR_RESPONSES
from kvmmanager.api.schemas.storage import PoolCreate, PoolOut
from kvmmanager.core.errors import InvalidInput, PermissionDenied
from kvmmanager.services.storage.specs import PoolSpec

router = APIRouter(prefix="/api/hosts/{host}/pools", tags=["pools"], responses=ERROR_RESPONSES)

PoolAction = Literal["start", "stop", "build", "refresh", "autostart", "noautostart"]
# Every action but a refresh changes host storage all users share: admin, as defining is.
OPERATOR_POOL_ACTIONS = frozenset({"refresh"})


def check_pool_action_role(user: CurrentUser, action: str) -> None:
    """The one rule for pool actions, on the REST route, the web form (and so the CLI).

    An unknown action is bad input for every role (the REST route's type already says so
    with a 422; the web form's path is a plain string), not a permission question."""
    if action not in get_args(PoolAction):
        known = ", ".join(get_args(PoolAction))
        raise InvalidInput(f"unknown pool action '{action}' (one of {known})", field="action")
    if action not in OPERATOR_POOL_ACTIONS and not user.has_role("admin"):
        raise PermissionDenied(f"pool action '{action}' needs the admin role (you are {user.role})")


@router.get("", name="pools.list", response_model=list[PoolOut])
async def list_pools(host: str, manager: ManagerDep) -> list[dict]:
    return [p.to_dict() for p in await manager.storage.list_pools(host)]


@router.post(
    "",
    name="pools.create",
    response_model=PoolOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=ADMIN_ONLY,
)
async def create_pool(host: str, body: PoolCreate, manager: ManagerDep) -> dict:
    spec = PoolSpec.model_validate(body.model_dump())
    return (await manager.storage.define_pool(host, spec)).to_dict()


@router.get("/{pool}", name="pools.get", response_model=PoolOut)
async def get_pool(host: str, pool: str, manager: ManagerDep) -> dict:
    return (await manager.storage.get_pool(host, pool)).to_dict()


@router.delete(
    "/{pool}",
    name="pools.delete",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=ADMIN_ONLY,
)
async def delete_pool(
    host: str,
    pool: str,
    *,
    delete_volumes: bool = False,
    force: bool = False,
    manager: ManagerDep,
) -> Response:
    """Stop and undefine. `delete_volumes=true` also deletes every volume and the pool's
    storage; a pool holding a volume a VM uses is refused (409) unless `force=true`."""
    await manager.storage.delete_pool(host, pool, delete_volumes=delete_volumes, force=force)
    return no_content()


@router.post("/{pool}/actions/{action}", name="pools.action", response_model=PoolOut)
async def pool_action(
    host: str, pool: str, action: PoolAction, manager: ManagerDep, user: CurrentUser
) -> dict:
    """409 when the pool is in the wrong state (start an active pool, refresh a stopped one);
    403 for an operator's action other than refresh."""
    check_pool_action_role(user, action)
    return (await manager.storage.pool_action(host, pool, action)).to_dict()
