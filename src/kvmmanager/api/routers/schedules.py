"""Scheduled operations: /api/schedules[/{schedule}] (`schedule` = id or name).

Viewers read schedules and their runs; operators create, change, enable/disable and
delete them, each only their own (and unowned ones; admins any: the ownership rule on
`{schedule}`, api/deps.check_path_owners). The VMs and the policy a schedule names must be
its creator's to act on, when it is made and again, as that user, whenever it fires.
Runs themselves are recorded by the scheduler (audit action
`schedules.run`) and published as `schedule.run` events on /api/events.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response, status

from kvmmanager.api.deps import CurrentUser, ManagerDep, no_content
from kvmmanager.api.schemas.common import ERROR_RESPONSES
from kvmmanager.api.schemas.schedules import ScheduleIn, ScheduleOut, ScheduleRunOut

router = APIRouter(tags=["schedules"], responses=ERROR_RESPONSES)
ONE = "/api/schedules/{schedule}"


@router.get("/api/schedules", name="schedules.list", response_model=list[ScheduleOut])
async def list_schedules(manager: ManagerDep) -> Any:
    return manager.schedules.list()


@router.post(
    "/api/schedules",
    name="schedules.create",
    status_code=status.HTTP_201_CREATED,
    response_model=ScheduleOut,
)
async def create(
    body: ScheduleIn,
    manager: ManagerDep,
    user: CurrentUser,
) -> Any:
    """`kind` once (`run_at`), daily (`at_time`), weekly (`at_time`, `weekdays`), monthly
    (`at_time`, `day_of_month`) or cron (`cron`), in `timezone`. `missed_policy` says what
    happens to an occurrence the manager was down for: `run` once when it is back, or
    `skip` (recorded either way)."""
    return manager.schedules.create(body, created_by=user.username)


@router.get(ONE, name="schedules.get", response_model=ScheduleOut)
async def get(schedule: str, manager: ManagerDep) -> Any:
    return manager.schedules.get(schedule)


@router.put(ONE, name="schedules.replace", response_model=ScheduleOut)
async def replace(
    schedule: str,
    body: ScheduleIn,
    manager: ManagerDep,
    user: CurrentUser,
) -> Any:
    """Replace the schedule whole; its next run is computed afresh from now."""
    return manager.schedules.replace(schedule, body, actor=user)


# enable / disable / delete as in alerts.py's rules and webhooks, on purpose: each is its own
# OpenAPI operation (name, path parameter, model); the work is one service call each.
@router.post(ONE + "/enable", name="schedules.enable", response_model=ScheduleOut)
async def enable(schedule: str, manager: ManagerDep) -> Any:
    """Enable; occurrences missed while disabled are not caught up."""
    return manager.schedules.set_enabled(schedule, True)


@router.post(ONE + "/disable", name="schedules.disable", response_model=ScheduleOut)
async def disable(schedule: str, manager: ManagerDep) -> Any:
    return manager.schedules.set_enabled(schedule, False)


@router.delete(ONE, name="schedules.delete", status_code=status.HTTP_204_NO_CONTENT)
async def delete(schedule: str, manager: ManagerDep) -> Response:
    manager.schedules.delete(schedule)
    return no_content()


@router.get(ONE + "/runs", name="schedules.runs", response_model=list[ScheduleRunOut])
async def runs(
    schedule: str,
    *,
    limit: int = Query(50, description="newest first, 1-500"),
    manager: ManagerDep,
) -> Any:
    return manager.schedules.runs(schedule, limit)
