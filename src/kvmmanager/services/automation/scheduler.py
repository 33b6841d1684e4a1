"""The runner of scheduled operations: a background task of the Manager.

Each occurrence is claimed in one transaction before anything runs: the schedule's
`next_run_at` moves on (only if it still holds that occurrence) and a `schedule_runs`
row is inserted (unique per schedule and occurrence). A restart, a second tick or a
second manager on the same database therefore never runs an occurrence twice; a run
that was in progress when the manager died is marked `interrupted` when an instance next
takes the singleton lease (its restart, or another instance), not repeated (at most once).
Only the holder of the singleton lease runs schedules, and its claims are fenced by the
lease's token (services/fleet/lease.py).

An occurrence found more than MISSED_AFTER late (the manager was down) is missed: the
schedule's policy runs it once now (`run`) or records it as `skipped`; either way the
schedule continues with its next future occurrence, never with a burst of catch-ups.
Every run ends in the audit log (`schedules.run`) and as a `schedule.run` event.

The clock is injectable (`scheduler.clock = lambda: ...`) so tests drive time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from kvmmanager.core.errors import KvmmError
from kvmmanager.db.ops_models import Schedule, ScheduleRun
from kvmmanager.services.automation.batch import BatchService, Target
from kvmmanager.services.automation.schedules import next_run
from kvmmanager.services.automation.zones import zone
from kvmmanager.services.backups.policies import BackupService
from kvmmanager.services.fleet.lease import LeaseService
from kvmmanager.services.users.audit import AuditRecord, AuditService
from kvmmanager.services.users.ownership import OwnershipService
from kvmmanager.virt.events import Event, EventBus
from kvmmanager.virt.registry import HostRegistry

log = logging.getLogger(__name__)

MISSED_AFTER = timedelta(minutes=2)
MAX_SLEEP = 30.0
# At start, how long the first pass waits for hosts to connect: a missed run taken
# while its host is still connecting would fail for no reason.
STARTUP_HOST_WAIT = 60.0
MAX_COUNTED_MISSES = 1000
RUN_CONCURRENCY = 4


@dataclass
class Claim:
    run_id: int
    schedule_id: int
    name: str
    action: str
    due: datetime
    missed: bool
    skipped: bool
    missed_count: int
    created_by: str | None
    targets: list[dict[str, str]] = field(default_factory=list)
    tag: str | None = None
    host: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    def __init__(
        self,
        db: sessionmaker[Session],
        bus: EventBus,
        registry: HostRegistry,
        lease: LeaseService,
        audit: AuditService,
        ownership: OwnershipService,
        batch: BatchService,
        backups: BackupService,
    ) -> None:
        self._db = db
        self._bus = bus
        self._registry = registry
        self._lease = lease
        self._audit = audit
        self._ownership = ownership
        self._batch = batch
        self._backups = backups
        self.clock: Callable[[], datetime] = _utcnow
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._runs: set[asyncio.Task[None]] = set()
        # Run ids this instance is executing (not "interrupted" when it regains the lease).
        self._active: set[int] = set()

    def now(self) -> datetime:
        return self.clock()

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Called by Manager.start(): start the loop; it runs schedules while this instance
        holds the singleton lease (services/fleet/lease.py)."""
        if self._task is not None:
            return
        self._lease.on_change(self._lease_changed)
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run_loop(), name="kvmm-scheduler")

    async def _lease_changed(self, held: bool) -> None:
        if held:
            # Runs left "running" were the previous holder's (it died or lost the lease
            # mid-run): closed out, never repeated. Ours in progress are left alone.
            await asyncio.to_thread(self.close_interrupted)
        self.wake()

    def close_interrupted(self) -> int:
        mine = set(self._active)
        with self._db.begin() as s:
            q = update(ScheduleRun).where(ScheduleRun.status == "running")
            if mine:
                q = q.where(ScheduleRun.id.not_in(mine))
            result = s.execute(
                q.values(
                    status="interrupted",
                    finished_at=self.now(),
                    message="the manager stopped during this run; it is not repeated",
                ).execution_options(synchronize_session=False)
            )
        return int(result.rowcount or 0)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.drain(limit=10)
        for t in list(self._runs):
            t.cancel()

    def wake(self) -> None:
        """Re-read the schedules now (one was added or changed, or the clock moved)."""
        loop, event = self._loop, self._wake
        if loop is None or event is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(event.set)

    async def drain(self, limit: float | None = None) -> None:
        """Wait (at most `limit` seconds) for the runs in progress (tests, shutdown)."""
        if self._runs:
            await asyncio.wait(list(self._runs), timeout=limit)

    async def _await_hosts(self) -> None:
        waits = [hc.wait_connected(STARTUP_HOST_WAIT) for hc in self._registry.all()]
        # A host that stays down fails its VMs' runs, which the run records say.
        await asyncio.gather(*waits, return_exceptions=True)

    async def _run_loop(self) -> None:
        assert self._wake is not None
        await self._await_hosts()
        while True:
            self._wake.clear()
            if not self._lease.held:
                # Another instance runs the schedules; gaining the lease wakes this loop.
                await self._sleep(MAX_SLEEP)
                continue
            try:
                await self.tick()
                delay = await asyncio.to_thread(self._delay)
            except Exception:
                log.exception("scheduler tick failed")
                delay = MAX_SLEEP
            await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        """Until woken or `seconds` pass. asyncio.timeout, not wait_for: Python 3.11's
        wait_for swallows a cancellation that meets a wake-up (the lease's release at
        stop wakes this loop as aclose cancels it), and the loop then ran on, so the
        Manager's stop waited forever (CI stop 15: a 300 s teardown timeout)."""
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    def _delay(self) -> float:
        with self._db() as s:
            earliest = s.scalar(
                select(func.min(Schedule.next_run_at)).where(Schedule.enabled.is_(True))
            )
        if earliest is None:
            return MAX_SLEEP
        return min(MAX_SLEEP, max(0.0, (earliest - self.now()).total_seconds()))

    # ---- one pass --------------------------------------------------------------------

    async def tick(self) -> list[int]:
        """Claim every due occurrence and start it; returns the claimed run ids. Only the
        holder of the singleton lease claims anything."""
        if not self._lease.held:
            return []
        now = self.now()
        claims = await asyncio.to_thread(self._claim_due, now)
        for c in claims:
            if c.skipped:
                await self._finish(c, "skipped", c_message(c), None)
                continue
            task = asyncio.get_running_loop().create_task(self._execute(c))
            self._runs.add(task)
            self._active.add(c.run_id)
            task.add_done_callback(self._runs.discard)

            def forget(_t: asyncio.Task[Any], rid: int = c.run_id) -> None:
                self._active.discard(rid)

            task.add_done_callback(forget)
        return [c.run_id for c in claims]

    def _claim_due(self, now: datetime) -> list[Claim]:
        with self._db() as s:
            due = list(
                s.execute(
                    select(Schedule.id, Schedule.next_run_at)
                    .where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
                    .order_by(Schedule.next_run_at)
                )
            )
        claims = []
        for sched_id, due_at in due:
            try:
                claim = self._claim(sched_id, due_at, now)
            except IntegrityError:
                claim = None  # someone else recorded this occurrence first
            if claim is not None:
                claims.append(claim)
        return claims

    def _claim(self, sched_id: int, due: datetime, now: datetime) -> Claim | None:
        with self._db.begin() as s:
            row = s.get(Schedule, sched_id)
            if row is None or not row.enabled or row.next_run_at != due:
                return None
            missed = now - due > MISSED_AFTER
            count = 1
            nxt = next_run(row, now)
            if missed:
                probe = next_run(row, due)
                while probe is not None and probe <= now and count < MAX_COUNTED_MISSES:
                    count += 1
                    probe = next_run(row, probe)
            # Fenced: written only while this instance still holds the lease it had.
            moved = s.execute(
                update(Schedule)
                .where(Schedule.id == sched_id, Schedule.next_run_at == due, self._lease.fence())
                .values(next_run_at=nxt)
                .execution_options(synchronize_session=False)
            )
            if moved.rowcount != 1:
                return None
            skipped = missed and row.missed_policy == "skip"
            run = ScheduleRun(
                schedule_id=sched_id,
                due_at=due,
                started_at=now,
                status="skipped" if skipped else "running",
                missed=missed,
            )
            s.add(run)
            s.flush()
            claim = Claim(
                run_id=run.id,
                schedule_id=sched_id,
                name=row.name,
                action=row.action,
                due=due,
                missed=missed,
                skipped=skipped,
                missed_count=count if missed else 0,
                created_by=row.created_by,
                targets=list(row.targets or []),
                tag=row.tag,
                host=row.host,
                params=dict(row.params or {}),
                timezone=row.timezone,
            )
            if skipped:
                # Final already: its record is complete in the claiming transaction.
                run.message, run.finished_at = c_message(claim), now
            return claim

    async def _execute(self, c: Claim) -> None:
        result: dict[str, Any] | None = None
        try:
            snapshot_name = None
            if c.action == "snapshot":
                local = c.due.astimezone(zone(c.timezone))
                prefix = c.params.get("snapshot_prefix") or c.name
                snapshot_name = f"{prefix}-{local:%Y%m%d-%H%M}"
            # The schedule acts as its creator, as they are now (deleted, disabled or
            # demoted since: refused); None only for schedules the service layer made.
            actor = (
                await asyncio.to_thread(
                    self._ownership.acting_principal, c.created_by, f"schedule '{c.name}'"
                )
                if c.created_by
                else None
            )
            if c.action == "backup":
                result = await self._backups.run(c.params.get("policy"), now=c.due, actor=actor)
            else:
                result = await self._batch.run(
                    c.action,
                    [Target(t["host"], t["vm"]) for t in c.targets],
                    tag=c.tag,
                    host=c.host,
                    mode=c.params.get("mode", "auto"),
                    snapshot_name=snapshot_name,
                    concurrency=RUN_CONCURRENCY,
                    actor=actor,
                )
            ok, total = result["succeeded"], result["total"]
            status = "ok" if ok == total else ("partial" if ok else "failed")
            message = f"{c.action}: {ok} of {total} vms succeeded"
            if total == 0:
                status, message = "failed", "no vm matched the schedule's vms or tag"
        except KvmmError as exc:
            status, message, result = "failed", exc.message, {"error": exc.to_dict()}
        except Exception as exc:
            log.exception("schedule %s failed", c.name)
            status, message = "failed", f"internal error: {exc}"
        if c.missed:
            message = f"{c_message(c)}; {message}"
        await self._finish(c, status, message, result)

    def _record(self, c: Claim, status: str, message: str, result: dict[str, Any] | None) -> None:
        finished = self.now()
        with self._db.begin() as s:
            run = s.get(ScheduleRun, c.run_id)
            if run is not None:
                run.status, run.message, run.result = status, message, result
                run.finished_at = finished
            s.execute(
                update(Schedule)
                .where(Schedule.id == c.schedule_id)
                .values(last_run_at=c.due, last_status=status)
            )
            self._audit.record(
                AuditRecord(
                    action="schedules.run",
                    username=c.created_by,
                    target=f"schedules/{c.name}",
                    params={
                        "by": "scheduler",
                        "run_id": c.run_id,
                        "schedule_action": c.action,
                        "due_at": c.due.isoformat(),
                        "missed": c.missed,
                        "status": status,
                        "message": message,
                    },
                    result="ok" if status in ("ok", "skipped") else "error",
                    error_code=None if status in ("ok", "skipped") else f"schedule_{status}",
                ),
                session=s,
            )

    async def _finish(
        self, c: Claim, status: str, message: str, result: dict[str, Any] | None
    ) -> None:
        await asyncio.to_thread(self._record, c, status, message, result)
        # Published from the loop: the bus's queues are not thread-safe.
        self._bus.publish(
            Event(
                "schedule.run",
                host="",
                subject=str(c.schedule_id),
                data={
                    "name": c.name,
                    "run_id": c.run_id,
                    "action": c.action,
                    "due_at": c.due.isoformat(),
                    "status": status,
                    "missed": c.missed,
                    "message": message,
                },
            )
        )


def c_message(c: Claim) -> str:
    """What a missed occurrence's record says."""
    if not c.missed:
        return ""
    n = c.missed_count
    times = "1 occurrence" if n == 1 else f"{n} occurrences"
    verb = "skipped per policy" if c.skipped else "run once now per policy"
    return f"missed {times} since {c.due.isoformat()} (manager not running); {verb}"
