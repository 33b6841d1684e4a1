"""Scheduled operations: what runs when (the rows), and when it runs next (the clock).

A schedule runs one batch action (start, shutdown, reboot, destroy, snapshot) on a list
of VMs and/or a tag, or a backup policy (`backup`, see backups.py); `once` at an
instant, `daily` / `weekly` (weekdays, 0 = Monday) / `monthly` (day of month; months
without that day use their last day) at a wall-clock time in its IANA time zone, or on
a 5-field `cron` expression in that zone. Wall-clock times follow daylight saving time:
02:30 daily stays 02:30 local; a time skipped by the spring change runs an hour later
that day, a time that repeats in autumn runs once.

    svc = manager.schedules
    s = svc.create(ScheduleSpec(name="nightly-snap", action="snapshot", tag="prod",
                                kind="daily", at_time="02:30", timezone="Europe/Berlin"),
                   created_by="alice")
The runner (claiming each occurrence once, missed-run policy, audit) is scheduler.py.
"""

from __future__ import annotations

import builtins
import calendar
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound
from kvmmanager.db.ops_models import Schedule, ScheduleRun
from kvmmanager.services.automation.zones import zone
from kvmmanager.services.backups.policies import BackupService
from kvmmanager.services.users import ownership
from kvmmanager.services.users.ownership import OwnershipService
from kvmmanager.services.users.service import Principal
from kvmmanager.services.vms.spec import validate_tags

ScheduleAction = Literal["start", "shutdown", "reboot", "destroy", "snapshot", "backup"]
Kind = Literal["once", "daily", "weekly", "monthly", "cron"]
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
MAX_TARGETS = 1000
MAX_RUNS_PAGE = 500


class TargetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(max_length=63)
    vm: str = Field(max_length=256)


class ScheduleSpec(BaseModel):
    """A schedule as the API and CLI give it; `validate_spec` checks it whole."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=256)
    action: ScheduleAction
    vms: list[TargetSpec] = Field(default_factory=list, max_length=MAX_TARGETS)
    tag: str | None = Field(None, max_length=256)
    host: str | None = Field(None, max_length=63, description="limits `tag` to one host")
    kind: Kind
    run_at: datetime | None = Field(None, description="once: ISO 8601; no offset = `timezone`")
    at_time: str | None = Field(None, description="daily/weekly/monthly: HH:MM local time")
    weekdays: list[int] | None = Field(None, description="weekly: 0 = Monday ... 6 = Sunday")
    day_of_month: int | None = Field(None, description="monthly: 1-31")
    cron: str | None = Field(None, max_length=128, description="cron: 5 fields")
    timezone: str = Field("UTC", max_length=64)
    missed_policy: Literal["run", "skip"] = "run"
    mode: Literal["acpi", "agent", "auto"] = Field("auto", description="shutdown mode")
    snapshot_prefix: str | None = Field(None, max_length=40, description="snapshot names")
    policy: str | None = Field(None, max_length=64, description="backup: the backup policy")
    enabled: bool = True


def _parse_time(text: str | None) -> time:
    m = _TIME_RE.fullmatch(text or "")
    if m is None:
        raise InvalidInput("at_time must be HH:MM (24 h)", field="at_time")
    return time(int(m.group(1)), int(m.group(2)))


def validate_spec(spec: ScheduleSpec) -> ScheduleSpec:
    """Raise InvalidInput naming the field; returns the spec with `run_at` made aware."""
    if not _NAME_RE.fullmatch(spec.name):
        raise InvalidInput(
            "name must be lowercase letters, digits, '.', '_' or '-' (max 64)", field="name"
        )
    if spec.action == "backup":
        # The policy names its VMs; the schedule only says when.
        if not spec.policy:
            raise InvalidInput("a backup schedule needs a backup policy", field="policy")
        if spec.vms or spec.tag is not None:
            raise InvalidInput("a backup schedule takes its vms from the policy", field="vms")
    elif spec.policy is not None:
        raise InvalidInput("only a backup schedule takes a policy", field="policy")
    elif not spec.vms and spec.tag is None:
        raise InvalidInput("name at least one vm or a tag", field="vms")
    if spec.tag is not None:
        try:
            validate_tags([spec.tag])
        except InvalidInput as exc:
            raise InvalidInput(exc.message, field="tag") from None
    tz = zone(spec.timezone)
    needed = {
        "once": ("run_at",),
        "daily": ("at_time",),
        "weekly": ("at_time", "weekdays"),
        "monthly": ("at_time", "day_of_month"),
        "cron": ("cron",),
    }[spec.kind]
    for fld in ("run_at", "at_time", "weekdays", "day_of_month", "cron"):
        given = getattr(spec, fld) is not None
        if given != (fld in needed):
            verb = "needs" if fld in needed else "does not take"
            raise InvalidInput(f"a {spec.kind} schedule {verb} {fld}", field=fld)
    if spec.at_time is not None:
        _parse_time(spec.at_time)
    if spec.weekdays is not None and (
        not spec.weekdays or any(not 0 <= d <= 6 for d in spec.weekdays)
    ):
        raise InvalidInput("weekdays are 0 (Monday) to 6 (Sunday), at least one", field="weekdays")
    if spec.day_of_month is not None and not 1 <= spec.day_of_month <= 31:
        raise InvalidInput("day_of_month must be 1-31", field="day_of_month")
    if spec.cron is not None and (len(spec.cron.split()) != 5 or not croniter.is_valid(spec.cron)):
        raise InvalidInput("cron must be a valid 5-field expression", field="cron")
    if spec.snapshot_prefix is not None and not _NAME_RE.fullmatch(spec.snapshot_prefix):
        raise InvalidInput(
            "snapshot_prefix: letters, digits, '.', '_', '-'", field="snapshot_prefix"
        )
    if spec.cron is not None:
        probe = Schedule(kind="cron", cron=spec.cron, timezone=spec.timezone)
        if next_run(probe, datetime.now(UTC)) is None:
            raise InvalidInput("cron never matches (e.g. February 30)", field="cron")
    out = spec.model_copy()
    if out.run_at is not None:
        if out.run_at.tzinfo is None:
            out.run_at = out.run_at.replace(tzinfo=tz)
        try:
            out.run_at = out.run_at.astimezone(UTC)
        except (OverflowError, ValueError):
            raise InvalidInput("run_at is out of range", field="run_at") from None
    if out.weekdays is not None:
        out.weekdays = sorted(set(out.weekdays))
    return out


def _local(day: date, at: time, tz: ZoneInfo) -> datetime:
    # fold=0: a wall time that repeats (autumn) is the first one; one that does not exist
    # (spring) maps to the instant an hour later, so the day's run is not lost.
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def next_run(s: Schedule, after: datetime) -> datetime | None:
    """The first occurrence strictly after `after` (UTC), None when there is none."""
    tz = zone(s.timezone)
    if s.kind == "once":
        return s.run_at if s.run_at is not None and s.run_at > after else None
    if s.kind == "cron":
        try:
            return croniter(s.cron, after.astimezone(tz)).get_next(datetime).astimezone(UTC)
        except (CroniterError, OverflowError, ValueError):
            return None  # an expression that never matches again ("0 0 30 2 *")
    at = _parse_time(s.at_time)
    start = after.astimezone(tz).date()
    if s.kind in ("daily", "weekly"):
        days = set(s.weekdays or range(7))
        for i in range(9):
            day = start + timedelta(days=i)
            if day.weekday() in days and (when := _local(day, at, tz)) > after:
                return when
        return None
    dom = s.day_of_month or 1
    year, month = start.year, start.month
    for _ in range(14):
        day = date(year, month, min(dom, calendar.monthrange(year, month)[1]))
        if (when := _local(day, at, tz)) > after:
            return when
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return None


def to_dict(s: Schedule) -> dict[str, Any]:
    return {
        "id": s.id,
        "name": s.name,
        "action": s.action,
        "vms": s.targets,
        "tag": s.tag,
        "host": s.host,
        "kind": s.kind,
        "run_at": s.run_at,
        "at_time": s.at_time,
        "weekdays": s.weekdays,
        "day_of_month": s.day_of_month,
        "cron": s.cron,
        "timezone": s.timezone,
        "missed_policy": s.missed_policy,
        "mode": (s.params or {}).get("mode", "auto"),
        "snapshot_prefix": (s.params or {}).get("snapshot_prefix"),
        "policy": (s.params or {}).get("policy"),
        "enabled": s.enabled,
        "next_run_at": s.next_run_at,
        "last_run_at": s.last_run_at,
        "last_status": s.last_status,
        "created_by": s.created_by,
        "created_at": s.created_at,
    }


def run_to_dict(r: ScheduleRun) -> dict[str, Any]:
    return {
        "id": r.id,
        "schedule_id": r.schedule_id,
        "due_at": r.due_at,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "status": r.status,
        "missed": r.missed,
        "message": r.message,
        "result": r.result,
    }


class ScheduleService:
    def __init__(
        self,
        db: sessionmaker[Session],
        owners: OwnershipService,
        backups: BackupService,
        *,
        now: Callable[[], datetime],
        wake: Callable[[], None],
    ) -> None:
        """`now` and `wake`: the runner's clock and its wake-up (Scheduler.now, .wake;
        the runner builds on this module, so they come as callbacks)."""
        self._db = db
        self._owners = owners
        self._backups = backups
        self._clock = now
        self._wake = wake

    def _now(self) -> datetime:
        return self._clock()

    def _apply(self, row: Schedule, spec: ScheduleSpec) -> None:
        row.name, row.action, row.kind = spec.name, spec.action, spec.kind
        row.targets = [t.model_dump() for t in spec.vms]
        row.tag, row.host = spec.tag, spec.host
        row.params = {
            "mode": spec.mode,
            "snapshot_prefix": spec.snapshot_prefix,
            "policy": spec.policy,
        }
        row.run_at, row.at_time, row.weekdays = spec.run_at, spec.at_time, spec.weekdays
        row.day_of_month, row.cron = spec.day_of_month, spec.cron
        row.timezone, row.missed_policy, row.enabled = (
            spec.timezone,
            spec.missed_policy,
            spec.enabled,
        )
        row.next_run_at = next_run(row, self._now()) if spec.enabled else None

    def _check_policy(self, spec: ScheduleSpec) -> None:
        if spec.policy is not None:
            self._backups.get(spec.policy)  # NotFound naming the policy

    def _check_owned(self, spec: ScheduleSpec, actor: Principal | None) -> None:
        """The VMs and the policy a schedule names must be `actor`'s to act on (the
        ownership rule), now; the scheduler checks again, as its creator, when it fires."""
        if actor is None:
            return
        own = self._owners
        own.check_targets(actor, [t.model_dump() for t in spec.vms])
        if spec.policy is not None:
            p = self._backups.get(spec.policy)
            ownership.check(actor, "policy", p["name"], p["created_by"])

    def create(
        self, spec: ScheduleSpec, created_by: str | None = None, *, actor: Principal | None = None
    ) -> dict[str, Any]:
        """`created_by`: the user the schedule acts as whenever it fires (re-read then);
        what it names is checked against their rights now. No creator: a schedule the
        service layer itself makes, which acts unchecked."""
        spec = validate_spec(spec)
        self._check_policy(spec)
        if actor is None and created_by:
            actor = self._owners.acting_principal(created_by, f"schedule '{spec.name}'")
        self._check_owned(spec, actor)
        if spec.kind == "once" and spec.run_at is not None and spec.run_at <= self._now():
            raise InvalidInput("run_at is in the past", field="run_at")
        with self._db.begin() as s:
            if s.scalar(select(Schedule.id).where(Schedule.name == spec.name)) is not None:
                raise Conflict(f"a schedule named '{spec.name}' already exists", field="name")
            row = Schedule(created_by=created_by)
            self._apply(row, spec)
            s.add(row)
            s.flush()
            out = to_dict(row)
        self._wake()
        return out

    def _row(self, s: Any, ident: str | int) -> Schedule:
        q = select(Schedule)
        text = str(ident)
        q = (
            q.where(Schedule.id == int(text))
            if (text.isdigit() and len(text) < 19)
            else q.where(Schedule.name == text)
        )
        row: Schedule | None = s.scalar(q)
        if row is None:
            raise NotFound(f"schedule '{ident}' not found", field="schedule")
        return row

    def get(self, ident: str | int) -> dict[str, Any]:
        with self._db() as s:
            return to_dict(self._row(s, ident))

    def list(self) -> list[dict[str, Any]]:
        with self._db() as s:
            return [to_dict(r) for r in s.scalars(select(Schedule).order_by(Schedule.name))]

    def replace(
        self, ident: str | int, spec: ScheduleSpec, actor: Principal | None = None
    ) -> dict[str, Any]:
        """Change a schedule whole; its next run is computed afresh from now. What it
        names must be `actor`'s to act on (it keeps its creator)."""
        spec = validate_spec(spec)
        self._check_policy(spec)
        self._check_owned(spec, actor)
        with self._db.begin() as s:
            row = self._row(s, ident)
            if spec.name != row.name and s.scalar(
                select(Schedule.id).where(Schedule.name == spec.name)
            ):
                raise Conflict(f"a schedule named '{spec.name}' already exists", field="name")
            self._apply(row, spec)
            out = to_dict(row)
        self._wake()
        return out

    def set_enabled(self, ident: str | int, enabled: bool) -> dict[str, Any]:
        with self._db.begin() as s:
            row = self._row(s, ident)
            row.enabled = enabled
            # Re-enabling never catches up on what was missed while disabled.
            row.next_run_at = next_run(row, self._now()) if enabled else None
            out = to_dict(row)
        self._wake()
        return out

    def delete(self, ident: str | int) -> None:
        with self._db.begin() as s:
            row = self._row(s, ident)
            s.execute(delete(ScheduleRun).where(ScheduleRun.schedule_id == row.id))
            s.delete(row)

    # builtins.list: `list` in this class is the method above.
    def runs(self, ident: str | int, limit: int = 50) -> builtins.list[dict[str, Any]]:
        if not 1 <= limit <= MAX_RUNS_PAGE:
            raise InvalidInput(f"limit must be 1..{MAX_RUNS_PAGE}", field="limit")
        with self._db() as s:
            row = self._row(s, ident)
            q = (
                select(ScheduleRun)
                .where(ScheduleRun.schedule_id == row.id)
                .order_by(ScheduleRun.due_at.desc(), ScheduleRun.id.desc())
                .limit(limit)
            )
            return [run_to_dict(r) for r in s.scalars(q)]
