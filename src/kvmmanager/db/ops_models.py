"""Operations automation: scheduled operations and their runs, alert rules and alerts,
webhooks and their deliveries, e-mail targets, backup policies.

Imported by `kvmmanager.db.models` so these tables are on the one metadata alembic and
the migration test compare against.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from kvmmanager.db.base import Base
from kvmmanager.db.columns import UTCDateTime, utcnow

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


ALERT_METRICS = (
    "cpu_pct",
    "mem_pct",
    "disk_rd_bps",
    "disk_wr_bps",
    "net_rx_bps",
    "net_tx_bps",
    "guest_disk_pct",
    "vm_crashed",
    "host_unreachable",
    "agent_unresponsive",
    "schedule_failed",
)
SEVERITIES = ("info", "warning", "critical")


class AlertRule(Base):
    __tablename__ = "alert_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    metric: Mapped[str] = mapped_column(String(32))
    # Threshold rules only: fire when `value op threshold` holds for `samples` samples
    # in a row; resolve when it fails for as many.
    op: Mapped[str] = mapped_column(String(2), default=">")
    threshold: Mapped[float | None] = mapped_column(Float)
    samples: Mapped[int] = mapped_column(Integer, default=1)
    severity: Mapped[str] = mapped_column(String(16), default="warning")
    # Scope: every VM (neither set), one VM (`host` + `vm`), or VMs with `tag`.
    host: Mapped[str | None] = mapped_column(String(63))
    vm: Mapped[str | None] = mapped_column(String(256))
    tag: Mapped[str | None] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(default=True)
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Alert(Base):
    """One firing of a rule for one subject (a VM, a host, a schedule), until resolved."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule_id: Mapped[int] = mapped_column(
        ForeignKey("alert_rules.id", ondelete="CASCADE"), index=True
    )
    rule_name: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(63), default="")
    subject: Mapped[str] = mapped_column(String(256), default="")
    subject_name: Mapped[str] = mapped_column(String(256), default="")
    state: Mapped[str] = mapped_column(String(16), default="firing", index=True)
    value: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text, default="")
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Webhook(Base):
    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(String(2048))
    # Shared secret for the HMAC-SHA256 signature; never returned by the API.
    secret: Mapped[str] = mapped_column(String(256))
    min_severity: Mapped[str] = mapped_column(String(16), default="info")
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(
        ForeignKey("webhooks.id", ondelete="CASCADE"), index=True
    )
    event: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class BackupPolicy(Base):
    """Snapshot backups of VMs with a retention rule; run by hand or by a schedule."""

    __tablename__ = "backup_policies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    targets: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    tag: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(63))
    # Retention (any combination; 0 = not used): the newest `keep_last`, plus the newest
    # of each of the last `keep_daily` days and `keep_weekly` ISO weeks, in `timezone`.
    keep_last: Mapped[int] = mapped_column(Integer, default=7)
    keep_daily: Mapped[int] = mapped_column(Integer, default=0)
    keep_weekly: Mapped[int] = mapped_column(Integer, default=0)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    quiesce: Mapped[str] = mapped_column(String(16), default="auto")
    # snapshot: libvirt snapshots of the VM; backup: copies into `pool` through libvirt's
    # backup API, a full one every `full_every` backups and incrementals in between.
    method: Mapped[str] = mapped_column(String(16), default="snapshot", server_default="snapshot")
    pool: Mapped[str | None] = mapped_column(String(64))
    full_every: Mapped[int] = mapped_column(Integer, default=7, server_default="7")
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[str | None] = mapped_column(String(16))
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


BACKUP_KINDS = ("full", "incremental")
BACKUP_STATES = ("running", "ok", "failed")


class Backup(Base):
    """One backup of one VM made with libvirt's backup API: its volumes in a pool, the
    checkpoint it set (the next incremental starts there), its checksums. An incremental's
    volumes are qcow2 overlays backed by its parent's, so the chain reads as a whole disk."""

    __tablename__ = "backups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy_id: Mapped[int | None] = mapped_column(
        ForeignKey("backup_policies.id", ondelete="SET NULL"), index=True
    )
    policy_name: Mapped[str] = mapped_column(String(40))
    host: Mapped[str] = mapped_column(String(63))
    vm_name: Mapped[str] = mapped_column(String(256))
    vm_uuid: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("backups.id", ondelete="RESTRICT"), index=True
    )
    checkpoint: Mapped[str | None] = mapped_column(String(128))
    pool: Mapped[str] = mapped_column(String(64))
    # [{"disk": "vda", "volume", "path", "capacity", "bytes", "sha256"}]
    volumes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), default="running", index=True)
    consistency: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The VM's inactive definition at backup time: what a restore to a new VM defines.
    domain_xml: Mapped[str] = mapped_column(Text, default="")
    message: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    verify_status: Mapped[str | None] = mapped_column(String(16))


class EmailTarget(Base):
    """Alert e-mail through an SMTP server."""

    __tablename__ = "email_targets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    smtp_host: Mapped[str] = mapped_column(String(255))
    smtp_port: Mapped[int] = mapped_column(Integer, default=587)
    # none | starttls | tls
    security: Mapped[str] = mapped_column(String(16), default="starttls")
    username: Mapped[str | None] = mapped_column(String(255))
    # Needed in clear to log in to the SMTP server; never returned by the API.
    password: Mapped[str | None] = mapped_column(String(255))
    from_addr: Mapped[str] = mapped_column(String(255))
    to_addrs: Mapped[list[str]] = mapped_column(JSON, default=list)
    min_severity: Mapped[str] = mapped_column(String(16), default="warning")
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ObjectOwner(Base):
    """Who owns an object libvirt keeps no metadata on (a volume), or that lives outside
    libvirt (an export bundle file): see services/users/ownership.py for the rule."""

    __tablename__ = "object_owners"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # volume | bundle
    host: Mapped[str] = mapped_column(String(63), primary_key=True)  # "" for bundles
    # volume: "<pool>/<volume name>"; bundle: its id.
    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
