"""Backup policies: /api/backup-policies[/{policy}] (`policy` = id or name), and the
backups made with libvirt's backup API: /api/backups, /api/hosts/{host}/vms/{vm}/backups.

Viewers read; operators create, delete and run them, each only their own policies (and
unowned ones; admins any: the ownership rule on `{policy}`, api/deps.check_path_owners);
the VMs a policy names, or a restore's body names, must be the caller's to change, and a
run refuses each VM the one running it (or the schedule's creator) may not change.
A run snapshots (method snapshot) or backs up into a pool (method backup) every VM of
the policy and prunes to its retention; `?background=true` runs it as a job (202). To
run a policy on a timetable, create a schedule with `action: backup` and `policy`.
Per-VM routes (take, verify, restore, delete one backup) follow the VM's ownership like
every /hosts/{host}/vms/{vm} route.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from kvmmanager.api.deps import CurrentUser, ManagerDep, no_content
from kvmmanager.api.schemas.backups import (
    BackupOut,
    BackupRunOut,
    PolicyIn,
    PolicyOut,
    RestoreImageIn,
    RestoreIn,
    TakeIn,
)
from kvmmanager.api.schemas.common import ERROR_RESPONSES, JobStarted
from kvmmanager.services.backups.policies import PolicySpec

router = APIRouter(tags=["backups"], responses=ERROR_RESPONSES)
ONE = "/api/backup-policies/{policy}"
VM_BACKUPS = "/api/hosts/{host}/vms/{vm}/backups"
VM_BACKUP = VM_BACKUPS + "/{backup_id}"
BACKGROUND = Query(False, description="run as a job (202 + job id)")


@router.get("/api/backup-policies", name="backups.list", response_model=list[PolicyOut])
async def list_policies(manager: ManagerDep) -> Any:
    return manager.backups.list()


@router.post(
    "/api/backup-policies",
    name="backups.create",
    status_code=status.HTTP_201_CREATED,
    response_model=PolicyOut,
)
async def create(body: PolicyIn, manager: ManagerDep, user: CurrentUser) -> Any:
    """Retention keeps the newest `keep_last` snapshots plus the newest of each of the last
    `keep_daily` days and `keep_weekly` ISO weeks (in `timezone`)."""
    spec = PolicySpec(**{**body.model_dump(), "vms": [v.model_dump() for v in body.vms]})
    return manager.backups.create(spec, created_by=user.username)


@router.get(ONE, name="backups.get", response_model=PolicyOut)
async def get(policy: str, manager: ManagerDep) -> Any:
    return manager.backups.get(policy)


@router.delete(ONE, name="backups.delete", status_code=status.HTTP_204_NO_CONTENT)
async def delete(policy: str, manager: ManagerDep) -> Response:
    """Forget the policy; the snapshots it made stay."""
    manager.backups.delete(policy)
    return no_content()


@router.post(
    ONE + "/run",
    name="backups.run",
    response_model=BackupRunOut,
    responses={202: {"model": JobStarted, "description": "running as a background job"}},
)
async def run(
    policy: str,
    *,
    background: bool = Query(False, description="run as a job (202 + job id)"),
    manager: ManagerDep,
    user: CurrentUser,
) -> Any:
    """Snapshot every VM of the policy now and prune to its retention; a VM that failed
    is reported in `results` (the status is still 200)."""
    if not background:
        return await manager.backups.run(policy, actor=user)
    p = manager.backups.get(policy)  # 404 now, not a failed job

    async def job(progress: Any) -> dict[str, Any]:
        return await manager.backups.run(p["id"], actor=user)

    job_id = manager.jobs.start("backup.run", f"backup:{p['name']}", job, user)
    return JSONResponse({"job_id": job_id}, status_code=status.HTTP_202_ACCEPTED)


@router.get(ONE + "/backups/{host}/{vm}", name="backups.list_backups")
async def list_backups(policy: str, host: str, vm: str, manager: ManagerDep) -> Any:
    """The VM's backups (snapshots) made by this policy, oldest first."""
    return await manager.backups.backups_of(policy, host, vm)


@router.post(ONE + "/restore", name="backups.restore")
async def restore(
    policy: str,
    body: RestoreIn,
    manager: ManagerDep,
    user: CurrentUser,
) -> Any:
    """Revert the VM to one of this policy's backups (`confirm: true` required: what
    happened since is discarded). The VM must be the caller's to change."""
    return await manager.backups.restore(
        policy, body.host, body.vm, body.snapshot, confirm=body.confirm, actor=user
    )


# ---- backups made with libvirt's backup API ------------------------------------------


@router.get("/api/backups", name="backups.images", response_model=list[BackupOut])
async def list_images(
    *,
    host: str | None = Query(None, max_length=63),
    vm: str | None = Query(None, max_length=256, description="name or uuid"),
    policy: str | None = Query(None, max_length=64),
    manager: ManagerDep,
) -> Any:
    """Every recorded backup (policy method `backup`), newest first."""
    return manager.backups.images.list(host, vm, policy)


@router.get(VM_BACKUPS, name="backups.vm_images", response_model=list[BackupOut])
async def list_vm_images(host: str, vm: str, manager: ManagerDep) -> Any:
    """The VM's backups, newest first (also those of a VM deleted since, by its name)."""
    return manager.backups.images.list(host, vm)


@router.post(
    VM_BACKUPS,
    name="backups.take",
    status_code=status.HTTP_201_CREATED,
    response_model=BackupOut,
    responses={202: {"model": JobStarted, "description": "running as a background job"}},
)
async def take(
    host: str,
    vm: str,
    body: TakeIn,
    *,
    background: bool = BACKGROUND,
    manager: ManagerDep,
    user: CurrentUser,
) -> Any:
    """Back the VM up now with a policy's pool, quiesce and chain rules (full or an
    incremental on the last backup's checkpoint); the policy's retention follows. As a
    job, cancelling it aborts libvirt's backup job and removes what it made."""
    p = manager.backups.get(body.policy)
    images = manager.backups.images
    if not background:
        return await images.take(p, host, vm, kind=body.kind, created_by=user.username)

    async def job(progress: Any) -> dict[str, Any]:
        r = await images.take(
            p, host, vm, kind=body.kind, progress=progress, created_by=user.username
        )
        return jsonable_encoder(r)

    job_id = manager.jobs.start("backup.take", f"{host}/{vm}", job, user, host=host)
    return JSONResponse({"job_id": job_id}, status_code=status.HTTP_202_ACCEPTED)


@router.get(VM_BACKUP, name="backups.image", response_model=BackupOut)
async def get_image(host: str, vm: str, backup_id: int, manager: ManagerDep) -> Any:
    return manager.backups.images.get(backup_id, host, vm)


@router.delete(VM_BACKUP, name="backups.delete_image")
async def delete_image(host: str, vm: str, backup_id: int, manager: ManagerDep) -> Any:
    """Delete the backup's volumes, its checkpoint on the VM and its record; 409 while an
    incremental is built on it."""
    return await manager.backups.images.delete(backup_id, host, vm)


@router.post(VM_BACKUP + "/verify", name="backups.verify")
async def verify(
    host: str,
    vm: str,
    backup_id: int,
    *,
    background: bool = BACKGROUND,
    manager: ManagerDep,
    user: CurrentUser,
) -> Any:
    """Read every volume back through a libvirt stream: sha256 against the one recorded
    at backup time, and a qcow2 header fit for its place in the chain. `status` says
    the outcome (a failed check is still a 200)."""
    images = manager.backups.images
    if not background:
        return await images.verify(backup_id, host, vm)
    images.get(backup_id, host, vm)  # 404 now, not a failed job

    async def job(progress: Any) -> dict[str, Any]:
        return await images.verify(backup_id, host, vm, progress=progress)

    job_id = manager.jobs.start("backup.verify", f"{host}/{vm}/{backup_id}", job, user, host=host)
    return JSONResponse({"job_id": job_id}, status_code=status.HTTP_202_ACCEPTED)


@router.post(VM_BACKUP + "/restore", name="backups.restore_image")
async def restore_image(
    host: str,
    vm: str,
    backup_id: int,
    body: RestoreImageIn,
    *,
    background: bool = BACKGROUND,
    manager: ManagerDep,
    user: CurrentUser,
) -> Any:
    """`mode: new` defines a new VM (`name`, new UUID and MACs) on copies of the backup's
    disks; `mode: original` puts the backup's data back into the VM's own disk volumes
    (the VM must be shut off and have no snapshots; `confirm: true` required)."""
    images = manager.backups.images
    args: dict[str, Any] = dict(mode=body.mode, name=body.name, pool=body.pool, start=body.start,
                confirm=body.confirm, host=host, vm=vm, created_by=user.username)  # fmt: skip
    if not background:
        return await images.restore(backup_id, **args)
    images.get(backup_id, host, vm)

    async def job(progress: Any) -> dict[str, Any]:
        return await images.restore(backup_id, progress=progress, **args)

    job_id = manager.jobs.start("backup.restore", f"{host}/{vm}/{backup_id}", job, user, host=host)
    return JSONResponse({"job_id": job_id}, status_code=status.HTTP_202_ACCEPTED)
