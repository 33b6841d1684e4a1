"""Storage pools of a host: /api/hosts/{host}/pools.

Roles: viewers read; operators run actions (start, stop, build, refresh, autostart);
defining and deleting a pool needs admin, because a pool names host storage (a directory,
a disk, an NFS export) that libvirtd will create, mount or wipe as root.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Response, status

from kvmmanager.api.deps import ManagerDep, require_role
from kvmmanager.api.schemas.common import ERROR_RESPONSES
from kvmmanager.api.schemas.storage import PoolCreate, PoolOut
from kvmmanager.services.storage_specs import PoolSpec

router = APIRouter(prefix="/api/hosts/{host}/pools", tags=["pools"], responses=ERROR_RESPONSES)

PoolAction = Literal["start", "stop", "build", "refresh", "autostart", "noautostart"]


@router.get("", name="pools.list", response_model=list[PoolOut])
async def list_pools(host: str, manager: ManagerDep) -> list[dict]:
    return [p.to_dict() for p in await manager.storage.list_pools(host)]


@router.post(
    "",
    name="pools.create",
    response_model=PoolOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(require_role("admin"))],
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
    dependencies=[Depends(require_role("admin"))],
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
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{pool}/actions/{action}", name="pools.action", response_model=PoolOut)
async def pool_action(host: str, pool: str, action: PoolAction, manager: ManagerDep) -> dict:
    """409 when the pool is in the wrong state (start an active pool, refresh a stopped one)."""
    return (await manager.storage.pool_action(host, pool, action)).to_dict()
