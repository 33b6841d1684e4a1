"""Jobs: GET /api/jobs, GET /api/jobs/{id}, POST /api/jobs/{id}/cancel.

A job is its creator's (and admins'): reading or cancelling another user's job is a 403
(api/deps.check_path_owners, the one ownership rule); the list shows only those."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from kvmmanager.api.deps import CurrentUser, ManagerDep
from kvmmanager.api.schemas.common import ERROR_RESPONSES, Page
from kvmmanager.db.models import Job

router = APIRouter(prefix="/api/jobs", tags=["jobs"], responses=ERROR_RESPONSES)

JobState = Literal["queued", "running", "done", "failed", "cancelled"]


class JobOut(BaseModel):
    id: str
    kind: str
    target: str
    state: str
    done: int
    total: int
    message: str
    result: Any = None
    error: dict[str, Any] | None = None
    created_by: str | None
    created_at: datetime
    updated_at: datetime


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id,
        kind=job.kind,
        target=job.target,
        state=job.state,
        done=job.progress_done,
        total=job.progress_total,
        message=job.message,
        result=job.result,
        error=job.error,
        created_by=job.created_by,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


@router.get("", name="jobs.list", response_model=Page[JobOut])
def list_jobs(
    *,
    state: JobState | None = None,
    kind: str | None = Query(None, max_length=64),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    user: CurrentUser,
    manager: ManagerDep,
) -> Page[JobOut]:
    # The ownership rule (services/ownership.may_act): a job's target, progress and
    # result are its creator's; admins see every job.
    mine = None if user.has_role("admin") else user.username
    jobs, total = manager.jobs.list(
        state=state, kind=kind, visible_to=mine, limit=limit, offset=offset
    )
    return Page[JobOut](items=[job_out(j) for j in jobs], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", name="jobs.get", response_model=JobOut)
def get_job(job_id: str, manager: ManagerDep) -> JobOut:
    # Another user's job is refused app-wide (api/deps.check_path_owners).
    return job_out(manager.jobs.get(job_id))


@router.post("/{job_id}/cancel", name="jobs.cancel", response_model=JobOut)
def cancel_job(job_id: str, manager: ManagerDep) -> JobOut:
    return job_out(manager.jobs.cancel(job_id))
