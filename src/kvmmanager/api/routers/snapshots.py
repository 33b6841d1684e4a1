"""VM snapshots: /api/hosts/{host}/vms/{vm}/snapshots[/{name}].

Viewers list and read; operators create, revert and delete, and set the VM's quiesce
policy. Create, revert and delete answer with the result; with `?background=true` they
run as a job instead and answer 202 with its id (a block commit of a big disk takes long).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Body, Query, status
from fastapi.responses import JSONResponse

from kvmmanager.api.deps import CurrentUser, ManagerDep
from kvmmanager.api.schemas.common import ERROR_RESPONSES, JobStarted
from kvmmanager.api.schemas.snapshots import (
    QuiescePolicy,
    QuiescePolicyOut,
    RevertBody,
    RevertOut,
    SnapshotCreate,
    SnapshotCreated,
    SnapshotDeleted,
    SnapshotList,
    SnapshotOut,
)
from kvmmanager.services.manager import Manager
from kvmmanager.services.users.service import Principal

router = APIRouter(tags=["snapshots"], responses=ERROR_RESPONSES)
BASE = "/api/hosts/{host}/vms/{vm}/snapshots"
ONE = BASE + "/{name}"
BACKGROUND = Query(False, description="run as a job: 202 with its id")
JOB_RESPONSE: dict[int | str, dict[str, Any]] = {
    202: {"model": JobStarted, "description": "started as a job"}
}


async def _maybe_job(
    manager: Manager,
    background: bool,
    kind: str,
    target: str,
    host: str,
    user: Principal,
    call: Callable[[], Awaitable[dict[str, Any]]],
) -> Any:
    if not background:
        return await call()

    async def job(progress: Any) -> dict[str, Any]:
        return await call()

    job_id = manager.jobs.start(kind, target, job, user, host=host)
    return JSONResponse({"job_id": job_id}, status_code=status.HTTP_202_ACCEPTED)


@router.get(BASE, name="snapshots.list", response_model=SnapshotList)
async def list_snapshots(host: str, vm: str, manager: ManagerDep) -> dict[str, Any]:
    """Every snapshot (creation order), the current one, and the parent/child tree."""
    return await manager.snapshots.list(host, vm)


@router.post(
    BASE,
    name="snapshots.create",
    status_code=status.HTTP_201_CREATED,
    response_model=SnapshotCreated,
    responses=JOB_RESPONSE,
)
async def create(
    host: str,
    vm: str,
    *,
    body: SnapshotCreate = Body(default_factory=SnapshotCreate),
    background: bool = BACKGROUND,
    manager: ManagerDep,
    user: CurrentUser,
) -> Any:
    """Take a snapshot. `consistency` in the answer says whether the guest was quiesced
    (and by which agent), carries its memory state, was off, or is crash-consistent."""
    return await _maybe_job(
        manager,
        background,
        "snapshot.create",
        f"{host}/{vm}",
        host,
        user,
        lambda: manager.snapshots.create(host, vm, **body.model_dump()),
    )


@router.get(ONE, name="snapshots.get", response_model=SnapshotOut)
async def get(host: str, vm: str, name: str, manager: ManagerDep) -> Any:
    return await manager.snapshots.get(host, vm, name)


@router.post(
    ONE + "/revert", name="snapshots.revert", response_model=RevertOut, responses=JOB_RESPONSE
)
async def revert(
    host: str,
    vm: str,
    name: str,
    *,
    body: RevertBody = Body(default_factory=RevertBody),
    background: bool = BACKGROUND,
    manager: ManagerDep,
    user: CurrentUser,
) -> Any:
    """Go back to the snapshot (disks, and memory when it has it). External snapshots
    cannot be reverted with libvirt before 9.9: 422 saying so."""
    return await _maybe_job(
        manager,
        background,
        "snapshot.revert",
        f"{host}/{vm}/{name}",
        host,
        user,
        lambda: manager.snapshots.revert(host, vm, name, start=body.start, force=body.force),
    )


@router.delete(ONE, name="snapshots.delete", response_model=SnapshotDeleted, responses=JOB_RESPONSE)
async def delete(
    host: str,
    vm: str,
    name: str,
    *,
    children: bool = Query(False, description="also delete every descendant"),
    background: bool = BACKGROUND,
    manager: ManagerDep,
    user: CurrentUser,
) -> Any:
    """Delete it; an external snapshot's overlay is merged (block commit) first, so the
    VM's data never changes and no parent image is removed."""
    return await _maybe_job(
        manager,
        background,
        "snapshot.delete",
        f"{host}/{vm}/{name}",
        host,
        user,
        lambda: manager.snapshots.delete(host, vm, name, children=children),
    )


@router.put(
    "/api/hosts/{host}/vms/{vm}/quiesce-policy",
    name="snapshots.quiesce_policy",
    response_model=QuiescePolicyOut,
)
async def set_quiesce_policy(host: str, vm: str, body: QuiescePolicy, manager: ManagerDep) -> Any:
    """`never`: snapshots of this VM are never quiesced (kept in the domain metadata)."""
    return await manager.snapshots.set_quiesce_policy(host, vm, body.policy)
