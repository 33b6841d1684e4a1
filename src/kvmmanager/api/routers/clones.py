"""VM clones: POST /api/hosts/{host}/vms/{vm}/clone starts a `vm.clone` job (202).

Bad input (name taken, running source without a consistent method, linked clone of a
non-template, disks outside any pool) is refused before the job starts. The job's result
is the new VM (name, uuid, volumes, nvram copy/reset, consistency)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from kvmmanager.api.deps import CurrentUser, ManagerDep
from kvmmanager.api.schemas.clones import CloneBody
from kvmmanager.api.schemas.common import ERROR_RESPONSES, JobStarted

router = APIRouter(tags=["clones"], responses=ERROR_RESPONSES)


@router.post(
    "/api/hosts/{host}/vms/{vm}/clone",
    name="clones.create",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobStarted,
)
async def clone(
    host: str,
    vm: str,
    body: CloneBody,
    manager: ManagerDep,
    user: CurrentUser,
) -> dict[str, Any]:
    """Clone the VM (new name, UUID and MACs; its own disks, or overlays for `linked`)."""
    job_id = await manager.clones.start(
        host, vm, body.name, mode=body.mode, consistent=body.consistent, start=body.start,
        user=user,
    )  # fmt: skip
    return {"job_id": job_id}
