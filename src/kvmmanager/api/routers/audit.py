"""GET /api/audit: the audit log, newest first, filtered and paginated (admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query

from kvmmanager.api.deps import ADMIN_ONLY, ManagerDep
from kvmmanager.api.schemas.common import ERROR_RESPONSES, OrmModel, Page

router = APIRouter(
    prefix="/api/audit",
    tags=["audit"],
    responses=ERROR_RESPONSES,
    dependencies=ADMIN_ONLY,
)


class AuditEntryOut(OrmModel):
    id: int
    ts: datetime
    username: str | None
    action: str
    target: str
    params: dict[str, Any] | None
    result: str
    error_code: str | None
    reason: str | None
    status: int | None
    job_id: str | None
    remote_addr: str | None


class AuditPageOut(Page[AuditEntryOut]):
    pass


@router.get("", name="audit.list", response_model=AuditPageOut)
def list_audit(
    *,
    user: str | None = Query(None, max_length=64),
    action: str | None = Query(None, max_length=128, description="Exact, or a prefix `vms.*`."),
    target: str | None = Query(None, max_length=512, description="Substring of the target."),
    since: datetime | None = None,
    until: datetime | None = None,
    result: Literal["ok", "error"] | None = None,
    job_id: str | None = Query(None, max_length=36),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    manager: ManagerDep,
) -> AuditPageOut:
    page = manager.audit.query(
        user=user,
        action=action,
        target=target,
        since=since,
        until=until,
        result=result,
        job_id=job_id,
        limit=limit,
        offset=offset,
    )
    return AuditPageOut(
        items=[AuditEntryOut.model_validate(e) for e in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
    )
