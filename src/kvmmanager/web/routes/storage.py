"""Storage pages: pools with capacity, their volumes, upload, download and delete."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from kvmmanager.api.deps import CurrentUser, ManagerDep
from kvmmanager.api.routers.pools import check_pool_action_role
from kvmmanager.core.errors import KvmmError
from kvmmanager.web.routes.storage_forms import DEFAULT_POOL
from kvmmanager.web.templating import refresh_with_toast, render, toast_headers

router = APIRouter(include_in_schema=False)


@router.get("/storage", name="web.storage", response_class=HTMLResponse)
async def storage(
    request: Request, *, host: str | None = None, manager: ManagerDep
) -> HTMLResponse:
    hosts = [h.name for h in manager.registry.all()]
    host = host or (hosts[0] if hosts else "")
    pools, error = [], ""
    try:
        pools = await manager.storage.list_pools(host) if host else []
    except KvmmError as e:
        error = e.message
    # Named in the Stop button's confirm: the running VMs a stop cuts off from their disks.
    running_users = {p.name: manager.storage.running_pool_users(host, p) for p in pools}
    return render(
        request,
        "storage/pools.html",
        active="storage",
        hosts=hosts,
        host=host,
        pools=pools,
        running_users=running_users,
        error=error,
        default_pool=DEFAULT_POOL,
    )


@router.get("/storage/{host}/{pool}", name="web.pool", response_class=HTMLResponse)
async def pool_detail(request: Request, host: str, pool: str, manager: ManagerDep) -> HTMLResponse:
    details = await manager.storage.get_pool(host, pool)
    volumes = await manager.storage.list_volumes(host, pool) if details.active else []
    template = "storage/_volumes.html" if request.headers.get("hx-request") else "storage/pool.html"
    return render(request, template, active="storage", host=host, pool=details, volumes=volumes)


@router.post("/storage/{host}/{pool}/actions/{action}", name="web.pool_action")
async def pool_action(
    host: str, pool: str, action: str, manager: ManagerDep, user: CurrentUser
) -> Response:
    check_pool_action_role(user, action)
    await manager.storage.pool_action(host, pool, action)
    return refresh_with_toast(f"pool {pool}: {action} done")


@router.post("/storage/{host}/{pool}/volumes/{vol}/delete", name="web.volume_delete")
async def volume_delete(
    request: Request, host: str, pool: str, vol: str, manager: ManagerDep
) -> Response:
    await manager.storage.delete_volume(host, pool, vol)
    details = await manager.storage.get_pool(host, pool)
    volumes = await manager.storage.list_volumes(host, pool)
    return render(
        request,
        "storage/_volumes.html",
        headers=toast_headers(f"Deleted volume {vol}"),
        host=host,
        pool=details,
        volumes=volumes,
    )
