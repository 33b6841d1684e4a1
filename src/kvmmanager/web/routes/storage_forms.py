"""Storage from zero in the browser: define and delete dir pools (a fresh host is offered
its default pool), create, resize, clone and delete volumes. Each form calls the same
storage service as the REST API; errors come back as a toast naming the field."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from kvmmanager.api.deps import (
    AdminUser,
    CurrentUser,
    ManagerDep,
)
from kvmmanager.services.manager import Manager
from kvmmanager.services.storage.specs import PoolSpec, VolumeSpec
from kvmmanager.web.templating import redirect_with_toasts, render, toast_headers

router = APIRouter(include_in_schema=False)

# What a fresh host is offered: libvirt's own conventional image directory.
DEFAULT_POOL = ("default", "/var/lib/libvirt/images")


@router.post("/storage/{host}/pools", name="web.pool_create")
async def pool_create(
    host: str,
    name: Annotated[str, Form()],
    target: Annotated[str, Form()],
    manager: ManagerDep,
    _user: AdminUser,
) -> Response:
    spec = PoolSpec(name=name.strip(), type="dir", target=target.strip() or None)
    pool = await manager.storage.define_pool(host, spec)
    return redirect_with_toasts(
        f"/storage/{host}/{pool.name}", (f"Created pool {pool.name} at {pool.target}", "ok")
    )


@router.post("/storage/{host}/{pool}/delete", name="web.pool_delete")
async def pool_delete(
    host: str,
    pool: str,
    *,
    delete_volumes: Annotated[bool, Form()] = False,
    manager: ManagerDep,
    _user: AdminUser,
) -> Response:
    await manager.storage.delete_pool(host, pool, delete_volumes=delete_volumes)
    what = " and its volumes" if delete_volumes else " (its volumes are kept on disk)"
    return redirect_with_toasts(f"/storage?host={host}", (f"Deleted pool {pool}{what}", "ok"))


async def _volumes(
    request: Request, manager: Manager, host: str, pool: str, message: str
) -> HTMLResponse:
    details = await manager.storage.get_pool(host, pool)
    return render(
        request,
        "storage/_volumes.html",
        headers=toast_headers(message),
        host=host,
        pool=details,
        volumes=await manager.storage.list_volumes(host, pool),
    )


@router.post(
    "/storage/{host}/{pool}/volumes", name="web.volume_create", response_class=HTMLResponse
)
async def volume_create(
    request: Request,
    host: str,
    pool: str,
    name: Annotated[str, Form()],
    capacity: Annotated[str, Form()],
    *,
    format: Annotated[str, Form()] = "qcow2",
    manager: ManagerDep,
    user: CurrentUser,
) -> HTMLResponse:
    spec = VolumeSpec(name=name.strip(), capacity=capacity.strip(), format=format)
    details = await manager.storage.create_volume(host, pool, spec)
    manager.ownership.record_new_volume(user, host, pool, details.name)
    return await _volumes(request, manager, host, pool, f"Created volume {details.name}")


@router.post(
    "/storage/{host}/{pool}/volumes/{vol}/resize",
    name="web.volume_resize",
    response_class=HTMLResponse,
)
async def volume_resize(
    request: Request,
    host: str,
    pool: str,
    vol: str,
    capacity: Annotated[str, Form()],
    manager: ManagerDep,
) -> HTMLResponse:
    details = await manager.storage.resize_volume(host, pool, vol, capacity.strip())
    return await _volumes(
        request, manager, host, pool, f"Resized {vol} to {details.capacity / 1024**3:g} GiB"
    )


@router.post(
    "/storage/{host}/{pool}/volumes/{vol}/clone",
    name="web.volume_clone",
    response_class=HTMLResponse,
)
async def volume_clone(
    request: Request,
    host: str,
    pool: str,
    vol: str,
    new_name: Annotated[str, Form()],
    manager: ManagerDep,
    user: CurrentUser,
) -> HTMLResponse:
    await manager.storage.clone_volume(host, pool, vol, new_name.strip(), user=user)
    # A copy is a job: the volume list refreshes itself on its job.done event.
    return await _volumes(
        request, manager, host, pool, f"Copying {vol} to {new_name.strip()}: it appears when done"
    )
