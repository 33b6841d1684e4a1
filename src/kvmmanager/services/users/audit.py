"""The audit log: who did what to which object, with which (redacted) parameters, and how
it ended. The API records every state-changing request automatically."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from kvmmanager.core.config import AuditSettings
from kvmmanager.core.errors import InvalidInput
from kvmmanager.core.text import encodable
from kvmmanager.db.models import REASON_MAX, AuditEntry
from kvmmanager.services.users.audit_budget import AnonymousFailureBudget, Suppressed

log = logging.getLogger(__name__)

REDACTED = "***"
SECRET_KEY_PARTS = ("password", "secret", "token", "passwd", "key")
MAX_PAGE = 1000


def is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(part in lowered for part in SECRET_KEY_PARTS)


def redact(value: Any) -> Any:
    """A copy of a JSON value with every secret-looking key's value replaced."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


@dataclass(slots=True)
class AuditRecord:
    """The fields of one entry, filled in while a request runs."""

    action: str
    username: str | None = None
    target: str = ""
    params: dict[str, Any] | None = None
    result: str = "ok"
    error_code: str | None = None
    reason: str | None = None
    status: int | None = None
    job_id: str | None = None
    remote_addr: str | None = None
    # Raw request parts, turned into `params` only when the entry is written.
    query: dict[str, Any] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    body_is_json: bool = False
    body_is_form: bool = False
    body_truncated: bool = False
    # Set once written, so the end of the request updates that entry instead of adding one.
    entry_id: int | None = None

    def build_params(self) -> dict[str, Any] | None:
        if self.params is not None:
            return self.params
        params: dict[str, Any] = dict(self.query)
        if self.body_truncated:
            params["body"] = "(too large to record)"
        elif self.body_is_form and self.body:
            params.update(parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))
        elif self.body_is_json and self.body:
            try:
                body = json.loads(self.body)
            except ValueError:
                body = "(invalid JSON)"
            if isinstance(body, dict):
                params.update(body)
            else:
                params["body"] = body
        return params or None

    def shown_reason(self) -> str | None:
        if not self.reason or self.result == "ok":
            return None
        shown: str = encodable(self.reason)
        return shown[:REASON_MAX]

    def refuse(self, reason: str, code: str = "invalid_input") -> None:
        """A page that answers a refused form itself (the form again, with its errors)
        marks the request refused here, with the reason the user was shown."""
        self.reason, self.error_code = reason, code

    def to_row(self) -> AuditEntry:
        params = self.build_params()
        return AuditEntry(
            username=self.username[:64] if self.username else self.username,
            action=self.action[:128],
            target=self.target[:512],
            # A refused request is audited too, with what it sent: never store text that
            # cannot be encoded again when the log is read.
            params=encodable(redact(params)) if params is not None else None,
            result=self.result,
            error_code=self.error_code,
            reason=self.shown_reason(),
            status=self.status,
            job_id=self.job_id,
            remote_addr=self.remote_addr,
        )


# The record of the state-changing request being served (set by the API's audit
# middleware). A job started while it is set writes this entry in its own transaction.
current_request: ContextVar[AuditRecord | None] = ContextVar("kvmm_audit_request", default=None)


@dataclass(slots=True)
class AuditPage:
    items: list[AuditEntry]
    total: int
    limit: int
    offset: int


class AuditService:
    def __init__(
        self,
        db: sessionmaker[DbSession],
        settings: AuditSettings,
        lease_held: Callable[[], bool],
    ) -> None:
        """`lease_held` says whether this instance holds the singleton lease now (the
        lease service's `held`): retention is pruned by one instance for all."""
        self._db = db
        self._settings = settings
        self._lease_held = lease_held
        cfg = settings
        # Failed requests without a user: bounded per address and minute (audit_budget.py).
        self.anonymous_budget = AnonymousFailureBudget(
            cfg.anonymous_failures_per_minute_per_address, cfg.anonymous_failures_per_minute
        )
        self._maintenance: asyncio.Task[None] | None = None

    # -- upkeep: retention and the summaries of what the budget left out ------------------

    def start(self) -> None:
        if self._maintenance is None:
            self._maintenance = asyncio.get_running_loop().create_task(
                self._maintain(), name="kvmm-audit-maintenance"
            )

    async def aclose(self) -> None:
        task, self._maintenance = self._maintenance, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # The minute in progress is not over; what closed already is written.
        await asyncio.to_thread(self.write_suppressed)

    async def _maintain(self) -> None:
        cfg = self._settings
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        while True:
            try:
                await asyncio.to_thread(self.write_suppressed)
                # Retention is singleton work: the lease holder prunes for every instance.
                if loop.time() >= next_prune and self._lease_held():
                    deleted = await asyncio.to_thread(self.prune)
                    if deleted:
                        log.info(
                            "audit log: %d entries older than %d days deleted",
                            deleted,
                            cfg.retention_days,
                        )
                    next_prune = loop.time() + cfg.prune_interval_seconds
            except Exception:
                # A busy or unreachable database must not end the upkeep for good.
                log.exception("audit log upkeep failed; retrying")
            await asyncio.sleep(min(30.0, cfg.prune_interval_seconds))

    def prune(self, now: datetime | None = None) -> int:
        """Delete entries older than `audit.retention_days`; returns how many."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self._settings.retention_days)
        with self._db.begin() as s:
            result = s.execute(delete(AuditEntry).where(AuditEntry.ts < cutoff))
        return int(getattr(result, "rowcount", 0) or 0)

    def write_suppressed(self) -> int:
        """One `audit.suppressed` entry per address and closed minute that went over budget."""
        closed: list[Suppressed] = self.anonymous_budget.take_closed()
        if not closed:
            return 0
        with self._db.begin() as s:
            for item in closed:
                s.add(
                    AuditEntry(
                        action="audit.suppressed",
                        target="",
                        params={
                            "count": item.count,
                            "minute": datetime.fromtimestamp(item.window_start, UTC).isoformat(),
                            "why": "failed requests without a user over the audit budget",
                        },
                        result="error",
                        error_code="suppressed",
                        remote_addr=item.address[:64],
                    )
                )
        return len(closed)

    def record(self, rec: AuditRecord, session: DbSession | None = None) -> int:
        """Write one entry; inside `session`'s transaction when given (job + audit)."""
        row = rec.to_row()
        if session is not None:
            session.add(row)
            session.flush()
            return row.id
        with self._db.begin() as s:
            s.add(row)
            s.flush()
            return row.id

    def update_outcome(
        self,
        entry_id: int,
        *,
        result: str,
        status: int | None,
        error_code: str | None,
        reason: str | None = None,
    ) -> None:
        with self._db.begin() as s:
            row = s.get(AuditEntry, entry_id)
            if row is not None:
                row.result, row.status, row.error_code = result, status, error_code
                row.reason = reason

    def query(
        self,
        *,
        user: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        result: str | None = None,
        job_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> AuditPage:
        """Newest first. `action` ending in '.' or '*' matches a prefix (`vms.*`)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
        if offset < 0:
            raise InvalidInput("offset must not be negative", field="offset")
        if result is not None and result not in ("ok", "error"):
            raise InvalidInput("result must be 'ok' or 'error'", field="result")
        q = select(AuditEntry)
        if user is not None:
            q = q.where(AuditEntry.username == user)
        if action is not None:
            if action.endswith(("*", ".")):
                q = q.where(AuditEntry.action.startswith(action.rstrip("*"), autoescape=True))
            else:
                q = q.where(AuditEntry.action == action)
        if target is not None:
            q = q.where(AuditEntry.target.contains(target, autoescape=True))
        if since is not None:
            q = q.where(AuditEntry.ts >= since)
        if until is not None:
            q = q.where(AuditEntry.ts < until)
        if result is not None:
            q = q.where(AuditEntry.result == result)
        if job_id is not None:
            q = q.where(AuditEntry.job_id == job_id)
        with self._db() as s:
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            items = list(
                s.scalars(
                    q.order_by(AuditEntry.ts.desc(), AuditEntry.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            )
        for row in items:
            # Rows written before `to_row` made parameters encodable may still hold lone
            # surrogates (the session is closed: this changes only what is shown).
            row.params = encodable(row.params)
        return AuditPage(items=items, total=total, limit=limit, offset=offset)
