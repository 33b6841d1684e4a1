"""Batch actions: POST /api/batch/{action} runs one action on many VMs.

The VMs are listed in the body (`vms`) and/or selected by `tag`. The answer (200) has a
result per VM; a VM that failed is reported there and the others still ran, so the
status is 200 even when some failed (`failed` counts them). With `?background=true` the
batch runs as a job (202 + job id; its result is the same document).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse

from kvmmanager.api.deps import CurrentUser, ManagerDep
from kvmmanager.api.schemas.batch import BatchAction, BatchRequest, BatchResult
from kvmmanager.api.schemas.common import ERROR_RESPONSES, JobStarted
from kvmmanager.services.automation.batch import Target
from kvmmanager.services.users import audit as audit_mod

router = APIRouter(tags=["batch"], responses=ERROR_RESPONSES)


@router.post(
    "/api/batch/{action}",
    name="batch.run",
    response_model=BatchResult,
    responses={202: {"model": JobStarted, "description": "running as a background job"}},
)
async def run(
    action: BatchAction,
    body: BatchRequest,
    *,
    background: bool = Query(False, description="run as a job (202 + job id)"),
    manager: ManagerDep,
    user: CurrentUser,
) -> Any:
    """start, shutdown, destroy, reboot, reset, suspend, resume, snapshot or delete every
    VM named in `vms` or carrying `tag`, at most `concurrency` at a time."""
    svc = manager.batch
    targets = [Target(t.host, t.vm) for t in body.vms]
    if (rec := audit_mod.current_request.get()) is not None:
        # The audit entry names what the batch acts on, not only the action.
        named = [f"{t.host}/{t.vm}" for t in targets] + ([f"tag:{body.tag}"] if body.tag else [])
        rec.target = ", ".join(named)[:500]
    kwargs: dict[str, Any] = {
        "tag": body.tag,
        "host": body.host,
        "mode": body.mode,
        "remove_volumes": body.remove_volumes,
        "snapshot_name": body.snapshot_name,
        "concurrency": body.concurrency,
        "actor": user,
    }
    if not background:
        return await svc.run(action, targets, **kwargs)
    # Bad input is a 422 now, not a failed job.
    svc.check(action, body.concurrency, body.mode)
    resolved = svc.resolve(targets, body.tag, body.host)

    async def job(progress: Any) -> dict[str, Any]:
        return await svc.run(action, resolved, **{**kwargs, "tag": None}, progress=progress)

    target = (body.tag and f"tag:{body.tag}") or f"{len(resolved)} vms"
    job_id = manager.jobs.start(f"batch.{action}", target, job, user)
    return JSONResponse({"job_id": job_id}, status_code=status.HTTP_202_ACCEPTED)
