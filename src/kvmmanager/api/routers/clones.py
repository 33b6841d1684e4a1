"""VM clones: POST /api/hosts/{host}/vms/{vm}/clone starts a `vm.clone` job (202).

Bad input (name taken, running source without a consistent method, linked clone of a
non-template, disks outside any pool) is refused before the job starts. The job's result
is the new VM (name, uuid, volumes, nvram copy/reset, consistency)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, status

from kvmmanager.api.deps import current_user, get_manager
from kvmmanager.api.schemas.clones import CloneBody
from kvmmanager.api.schemas.common import ERROR_RESPONSES, JobStarted
from kvmmanager.services.manager import Manager
from kvmmanager.services.users import Principal

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
    manager: Manager = Depends(get_manager),
    user: Principal = Depends(current_user),
) -> dict[str, Any]:
    """Clone the VM (new name, UUID and MACs; its own disks, or overlays for `linked`)."""
    job_id = await manager.clones.start(
        host, vm, body.name, mode=body.mode, consistent=body.consistent, start=body.start,
        user=user,
    )  # fmt: skip
    return {"job_id": job_id}
