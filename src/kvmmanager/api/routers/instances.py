"""GET /api/instances: the manager instances sharing this database (admin)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter

from kvmmanager.api.deps import ADMIN_ONLY, ManagerDep
from kvmmanager.api.schemas.common import ERROR_RESPONSES, OrmModel

router = APIRouter(
    prefix="/api/instances",
    tags=["instances"],
    responses=ERROR_RESPONSES,
    dependencies=ADMIN_ONLY,
)


class InstanceOut(OrmModel):
    id: str
    hostname: str
    address: str
    version: str
    pid: int
    started_at: datetime
    last_seen: datetime
    alive: bool
    this: bool
    # Holds the live singleton lease: runs schedules, alerts, retention, history writes.
    lease_holder: bool


@router.get("", name="instances.list", response_model=list[InstanceOut])
def list_instances(manager: ManagerDep) -> list[InstanceOut]:
    return [InstanceOut.model_validate(i) for i in manager.instances.list()]
