"""Jobs: GET /api/jobs, GET /api/jobs/{id}, POST /api/jobs/{id}/cancel."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from kvmmanager.api.deps import current_user, get_manager
from kvmmanager.api.schemas.common import ERROR_RESPONSES, Page
from kvmmanager.core.errors import NotFound
from kvmmanager.db.models import Job
from kvmmanager.services.manager import Manager
from kvmmanager.services.users import Principal

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


def _visible(job: Job, user: Principal) -> Job:
    # Viewers see only their own jobs (targets and results can name private objects).
    if not user.has_role("operator") and job.created_by != user.username:
        raise NotFound(f"no job {job.id}", field="job_id")
    return job


@router.get("", name="jobs.list", response_model=Page[JobOut])
def list_jobs(
    state: JobState | None = None,
    kind: str | None = Query(None, max_length=64),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    user: Principal = Depends(current_user),
    manager: Manager = Depends(get_manager),
) -> Page[JobOut]:
    owner = None if user.has_role("operator") else user.username
    jobs, total = manager.jobs.list(state=state, kind=kind, user=owner, limit=limit, offset=offset)
    return Page[JobOut](items=[job_out(j) for j in jobs], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", name="jobs.get", response_model=JobOut)
def get_job(
    job_id: str,
    user: Principal = Depends(current_user),
    manager: Manager = Depends(get_manager),
) -> JobOut:
    return job_out(_visible(manager.jobs.get(job_id), user))


@router.post("/{job_id}/cancel", name="jobs.cancel", response_model=JobOut)
def cancel_job(job_id: str, manager: Manager = Depends(get_manager)) -> JobOut:
    return job_out(manager.jobs.cancel(job_id))
