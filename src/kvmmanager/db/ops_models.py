"""Operations automation: scheduled operations and their runs.

Imported by `kvmmanager.db.models` so these tables are on the one metadata alembic and
the migration test compare against.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kvmmanager.db.base import Base
from kvmmanager.db.models import UTCDateTime, utcnow

SCHEDULE_KINDS = ("once", "daily", "weekly", "monthly", "cron")
MISSED_POLICIES = ("run", "skip")
RUN_STATES = ("running", "ok", "partial", "failed", "skipped", "interrupted")


class Schedule(Base):
    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    action: Mapped[str] = mapped_column(String(32))
    # What it acts on: explicit [{"host", "vm"}] and/or every VM with `tag` (on `host`).
    targets: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    tag: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(63))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    kind: Mapped[str] = mapped_column(String(16))
    # once: the instant; daily/weekly/monthly: the wall-clock time in `timezone`.
    run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    at_time: Mapped[str | None] = mapped_column(String(5))
    weekdays: Mapped[list[int] | None] = mapped_column(JSON)
    day_of_month: Mapped[int | None] = mapped_column(Integer)
    cron: Mapped[str | None] = mapped_column(String(128))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    missed_policy: Mapped[str] = mapped_column(String(8), default="run")
    enabled: Mapped[bool] = mapped_column(default=True)
    # The next occurrence not yet claimed; NULL once a `once` schedule has run.
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[str | None] = mapped_column(String(16))
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ScheduleRun(Base):
    __tablename__ = "schedule_runs"
    # One row per occurrence: claiming an occurrence twice (a restart, a second manager on
    # the same database) fails on this constraint, so an occurrence never runs twice.
    __table_args__ = (UniqueConstraint("schedule_id", "due_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    schedule_id: Mapped[int] = mapped_column(
        ForeignKey("schedules.id", ondelete="CASCADE"), index=True
    )
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default="running")
    missed: Mapped[bool] = mapped_column(default=False)
    message: Mapped[str] = mapped_column(Text, default="")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
