"""REST shapes of scheduled operations (the request body is services' ScheduleSpec)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from kvmmanager.services.automation.schedules import ScheduleSpec

ScheduleIn = ScheduleSpec


class ScheduleOut(BaseModel):
    id: int
    name: str
    action: str
    vms: list[dict[str, str]]
    tag: str | None
    host: str | None
    kind: str
    run_at: datetime | None
    at_time: str | None
    weekdays: list[int] | None
    day_of_month: int | None
    cron: str | None
    timezone: str
    missed_policy: str
    mode: str
    snapshot_prefix: str | None
    policy: str | None
    enabled: bool
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_status: str | None
    created_by: str | None
    created_at: datetime


class ScheduleRunOut(BaseModel):
    id: int
    schedule_id: int
    due_at: datetime
    started_at: datetime
    finished_at: datetime | None
    status: str
    missed: bool
    message: str
    result: dict[str, Any] | None
