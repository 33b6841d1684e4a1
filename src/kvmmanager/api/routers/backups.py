"""Backup policies: /api/backup-policies[/{policy}] (`policy` = id or name).

Viewers read; operators create, delete and run them. A run snapshots every VM of the
policy and prunes to its retention; `?background=true` runs it as a job (202). To run a
policy on a timetable, create a schedule with `action: backup` and `policy`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Response, status
from fastapi.responses import JSONResponse

from kvmmanager.api.deps import current_user, get_manager
from kvmmanager.api.schemas.backups import BackupRunOut, PolicyIn, PolicyOut, RestoreIn
from kvmmanager.api.schemas.common import ERROR_RESPONSES, JobStarted
from kvmmanager.services.backups import PolicySpec
from kvmmanager.services.manager import Manager
from kvmmanager.services.users import Principal

router = APIRouter(tags=["backups"], responses=ERROR_RESPONSES)
ONE = "/api/backup-policies/{policy}"


@router.get("/api/backup-policies", name="backups.list", response_model=list[PolicyOut])
async def list_policies(manager: Manager = Depends(get_manager)) -> Any:
    return manager.backups.list()


@router.post(
    "/api/backup-policies",
    name="backups.create",
    status_code=status.HTTP_201_CREATED,
    response_model=PolicyOut,
)
async def create(
    body: PolicyIn, manager: Manager = Depends(get_manager), user: Principal = Depends(current_user)
) -> Any:
    """Retention keeps the newest `keep_last` snapshots plus the newest of each of the last
    `keep_daily` days and `keep_weekly` ISO weeks (in `timezone`)."""
    spec = PolicySpec(**{**body.model_dump(), "vms": [v.model_dump() for v in body.vms]})
    return manager.backups.create(spec, created_by=user.username)


@router.get(ONE, name="backups.get", response_model=PolicyOut)
async def get(policy: str, manager: Manager = Depends(get_manager)) -> Any:
    return manager.backups.get(policy)


@router.delete(ONE, name="backups.delete", status_code=status.HTTP_204_NO_CONTENT)
async def delete(policy: str, manager: Manager = Depends(get_manager)) -> Response:
    """Forget the policy; the snapshots it made stay."""
    manager.backups.delete(policy)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    ONE + "/run",
    name="backups.run",
    response_model=BackupRunOut,
    responses={202: {"model": JobStarted, "description": "running as a background job"}},
)
async def run(
    policy: str,
    background: bool = Query(False, description="run as a job (202 + job id)"),
    manager: Manager = Depends(get_manager),
    user: Principal = Depends(current_user),
) -> Any:
    """Snapshot every VM of the policy now and prune to its retention; a VM that failed
    is reported in `results` (the status is still 200)."""
    if not background:
        return await manager.backups.run(policy)
    p = manager.backups.get(policy)  # 404 now, not a failed job

    async def job(progress: Any) -> dict[str, Any]:
        return await manager.backups.run(p["id"])

    job_id = manager.jobs.start("backup.run", f"backup:{p['name']}", job, user)
    return JSONResponse({"job_id": job_id}, status_code=status.HTTP_202_ACCEPTED)


@router.get(ONE + "/backups/{host}/{vm}", name="backups.list_backups")
async def list_backups(
    policy: str, host: str, vm: str, manager: Manager = Depends(get_manager)
) -> Any:
    """The VM's backups (snapshots) made by this policy, oldest first."""
    return await manager.backups.backups_of(policy, host, vm)


@router.post(ONE + "/restore", name="backups.restore")
async def restore(policy: str, body: RestoreIn, manager: Manager = Depends(get_manager)) -> Any:
    """Revert the VM to one of this policy's backups (`confirm: true` required: what
    happened since is discarded)."""
    return await manager.backups.restore(
        policy, body.host, body.vm, body.snapshot, confirm=body.confirm
    )
