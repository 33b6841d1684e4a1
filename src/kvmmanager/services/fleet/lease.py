"""The singleton lease (issue 16 item 2): work that must happen once per database runs
only on the instance holding the `singleton` lease row.

Singleton work is: the scheduler (schedules, and through them backup policies), alert
evaluation (and so alert e-mail and webhook notifications), resuming pending webhook
deliveries, audit retention and metric-history writes with their pruning.

The lease is a row (holder, fencing token, expiry). Taking or renewing it is ONE
conditional UPDATE, `... WHERE name = 'singleton' AND (holder = me OR expires_at < now)`,
whose row count says whether it worked: both SQLite (one writer at a time) and
PostgreSQL (row lock, the WHERE re-checked on the locked row under READ COMMITTED) let
exactly one of two racing instances win. The first row is made by an INSERT whose
primary key lets only one instance succeed. The holder's heartbeat renews the lease;
a holder that stops releases it (the next instance takes over at its next beat); a holder
that dies is replaced once its lease expired (`fleet.lease_seconds`).

The holder counts itself as holding only until `lease_seconds` after it *sent* its last
successful renewal (a monotonic deadline, minus nothing: another instance can take over
only after the expiry written by that renewal, which is later), so it stops starting
singleton work before anyone else may start. Work that is claimed in the database (a
schedule occurrence) is also fenced: the claim is written only while the lease row still
names this holder with this token (`fence()`), so a holder that lost the lease without
noticing claims nothing. Instances' clocks must agree (NTP) to well under lease_seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from kvmmanager.core.config import FleetSettings
from kvmmanager.db.fleet_models import Lease
from kvmmanager.db.models import utcnow

log = logging.getLogger(__name__)

SINGLETON = "singleton"

# Called on the event loop when this instance gains (True) or loses (False) the lease.
LeaseHook = Callable[[bool], Awaitable[None]]


@dataclass(frozen=True)
class LeaseInfo:
    name: str
    holder: str
    token: int
    acquired_at: datetime
    expires_at: datetime
    live: bool  # not expired


class LeaseService:
    def __init__(self, db: sessionmaker[Session], fleet: FleetSettings, holder: str) -> None:
        self._db = db
        self.name = SINGLETON
        self.seconds = float(fleet.lease_seconds)
        # The holder is the instance: its heartbeat row and its lease share one id.
        self.holder = holder
        # The fencing token of the lease while this instance holds it.
        self.token: int | None = None
        self._valid_until = 0.0  # time.monotonic() deadline of what we hold
        self._hooks: list[LeaseHook] = []
        self._lock = asyncio.Lock()

    @property
    def held(self) -> bool:
        """This instance holds the lease now (and may start singleton work)."""
        return self.token is not None and time.monotonic() < self._valid_until

    def on_change(self, hook: LeaseHook) -> None:
        self._hooks.append(hook)

    # ---- the database side (blocking; run in a worker thread) ---------------------------

    def try_acquire(self) -> int | None:
        """Renew the lease if this instance holds it, take it if it is free or expired;
        returns the fencing token held, or None if another instance holds a live lease."""
        me, now = self.holder, utcnow()
        expires = now + timedelta(seconds=self.seconds)
        with self._db.begin() as s:
            result = s.execute(
                update(Lease)
                .where(
                    Lease.name == self.name,
                    or_(Lease.holder == me, Lease.expires_at < now),
                )
                .values(
                    # A new holder gets the next token; a renewal keeps its own.
                    token=case((Lease.holder == me, Lease.token), else_=Lease.token + 1),
                    acquired_at=case((Lease.holder == me, Lease.acquired_at), else_=now),
                    holder=me,
                    expires_at=expires,
                )
                .execution_options(synchronize_session=False)
            )
            # An UPDATE's result is a CursorResult; Session.execute is typed Result.
            if getattr(result, "rowcount", 0) == 1:
                token: int | None = s.scalar(select(Lease.token).where(Lease.name == self.name))
                return token
        try:
            with self._db.begin() as s:
                if s.get(Lease, self.name) is not None:
                    return None  # someone else's live lease
                row = Lease(name=self.name, holder=me, token=1, acquired_at=now, expires_at=expires)
                s.add(row)
            return 1
        except IntegrityError:
            return None  # another instance made the row first

    def release_row(self) -> None:
        """Let the lease go now (clean stop): the next instance's beat takes it."""
        with self._db.begin() as s:
            s.execute(
                update(Lease)
                .where(Lease.name == self.name, Lease.holder == self.holder)
                .values(expires_at=utcnow() - timedelta(seconds=1))
                .execution_options(synchronize_session=False)
            )

    def fence(self) -> ColumnElement[bool]:
        """A condition for a claiming statement: true only while the lease row still names
        this instance with the token it holds (a lost lease claims nothing)."""
        return exists().where(
            and_(Lease.name == self.name, Lease.holder == self.holder, Lease.token == self.token)
        )

    def info(self) -> LeaseInfo | None:
        with self._db() as s:
            row = s.get(Lease, self.name)
            if row is None:
                return None
            return LeaseInfo(
                name=row.name,
                holder=row.holder,
                token=row.token,
                acquired_at=row.acquired_at,
                expires_at=row.expires_at,
                live=row.expires_at >= utcnow(),
            )

    # ---- the event-loop side -----------------------------------------------------------

    async def renew(self) -> bool:
        """Take or renew the lease (the heartbeat calls this); runs the hooks on a change.
        Returns whether this instance holds it."""
        async with self._lock:
            was = self.held
            sent = time.monotonic()
            try:
                token = await asyncio.to_thread(self.try_acquire)
            except Exception:
                # Not knowing is not holding: the deadline of the last renewal still runs.
                log.exception("renewing the singleton lease failed")
                token = self.token if self.held else None
            else:
                if token is not None:
                    self._valid_until = sent + self.seconds
            if token is not None and token != self.token:
                if was:
                    log.warning("singleton lease token changed under this instance")
                log.info("this instance holds the singleton lease (token %d)", token)
            self.token = token
            now = self.held
            if now != was:
                if not now:
                    log.warning("this instance no longer holds the singleton lease")
                await self._run_hooks(now)
            return now

    async def release(self) -> None:
        async with self._lock:
            if self.token is None:
                return
            self.token, self._valid_until = None, 0.0
            await self._run_hooks(False)
            try:
                await asyncio.to_thread(self.release_row)
            except Exception:
                log.exception("releasing the singleton lease failed (it expires by itself)")

    async def _run_hooks(self, held: bool) -> None:
        for hook in list(self._hooks):
            try:
                await hook(held)
            except Exception:
                log.exception("a singleton lease hook failed")
