"""Long operations as jobs: a DB row per job, progress events on the bus, cancellation.

`start(kind, target, fn, user)` returns the job id at once. `fn` (sync: run in a worker
thread; or async) receives a `JobProgress` handle `p`: `p(done, total, message)` reports
progress and raises `Cancelled` once a cancel was requested; `p.cancelled()` checks
without raising. `fn` cleans up what it half made and returns a JSON-able result.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from kvmmanager.core.errors import Cancelled, Conflict, InvalidInput, KvmmError, NotFound
from kvmmanager.db.models import JOB_STATES, Job, utcnow
from kvmmanager.services.jobs import interrupted as job_interrupted
from kvmmanager.services.jobs import undo as job_undo
from kvmmanager.services.users import audit as audit_mod
from kvmmanager.virt.calls import job_calls
from kvmmanager.virt.events import Event, EventBus

log = logging.getLogger(__name__)

FINAL_STATES = frozenset({"done", "failed", "cancelled"})
# Progress can come per chunk of a multi-GiB upload; the DB and the bus get at most this
# many updates per second per job. The final figures are always written at the end.
_PUBLISH_INTERVAL = 0.1
_DB_INTERVAL = 0.5
MAX_WORKERS = 8
FINISH_RETRY_SECONDS = 120.0
# A job failed because its host went away: how long to wait for the host to come back
# to remove what the job had half made, and what its message says meanwhile.
HOST_BACK_WAIT_SECONDS = 3600.0
UNDO_PENDING = "what it had half made is removed when the host is back"


@dataclass(slots=True)
class _Live:
    progress: JobProgress
    future: asyncio.Future[None]


class JobProgress:
    """The handle a job function gets. Callable: `progress(done, total, message)`."""

    def __init__(
        self,
        service: JobService,
        job_id: str,
        kind: str,
        target: str,
        host: str,
        owner: str | None = None,
    ):
        self._svc = service
        self.id = job_id
        # The job's creator: its events reach only those who may read the job.
        self.owner = owner
        self.kind = kind
        self.target = target
        self.host = host
        self.done = 0
        self.total = 0
        self.message = ""
        self._cancel = threading.Event()
        self._last_publish = 0.0
        self._last_db = 0.0
        self._flush_pending = False
        self.finished = False
        self._undo: list[dict[str, Any]] = []
        self._undo_lock = threading.Lock()

    def __call__(self, done: int, total: int | None = None, message: str | None = None) -> None:
        self.done = int(done)
        if total is not None:
            self.total = int(total)
        if message is not None:
            self.message = message
        self.check()
        now = time.monotonic()
        held_back = False
        if now - self._last_publish >= _PUBLISH_INTERVAL or self.done == self.total:
            self._last_publish = now
            self._svc._publish(self, "job.progress", state="running")
        else:
            held_back = True
        if now - self._last_db >= _DB_INTERVAL:
            self._last_db = now
            self._svc._write_progress(self)
        else:
            held_back = True
        if held_back and not self._flush_pending:
            # The rate limit must delay the figures, never lose them: a transfer that
            # stalls after a burst would otherwise show the burst's first figure forever.
            self._flush_pending = True
            self._svc._schedule_flush(self)

    def undo_on_interrupt(self, action: str, **args: str) -> None:
        """Record what the next start must remove should this process die before the
        job ends (kill -9, power loss): call it BEFORE making the object, e.g.
        `("delete_volume", host=, pool=, volume=)` before creating a volume,
        `("undefine_domain", host=, uuid=, name=)` before defining a VM with that UUID,
        `("delete_snapshot", host=, uuid=, name=, vm=)` before taking a temporary one.
        Records add up and are undone newest first (see job_undo); `host` defaults to
        the job's. Kept in the job row; the job's end overwrites them."""
        if action not in job_undo.UNDO_ACTIONS:
            raise ValueError(f"unknown undo action {action!r}")
        with self._undo_lock:
            self._undo.append({"action": action, "host": self.host, **args})
            self._svc._write_undo(self, list(self._undo))

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled(f"job {self.id} was cancelled")

    def _request_cancel(self) -> None:
        self._cancel.set()


class JobService:
    def __init__(
        self,
        db: sessionmaker[Session],
        bus: EventBus,
        audit: audit_mod.AuditService,
        undo: job_undo.UndoTools,
        *,
        instance_id: Callable[[], str],
        alive_ids: Callable[[], list[str]],
        here: Callable[[], job_interrupted.Here],
    ) -> None:
        """`instance_id` and `alive_ids` are this manager instance's id and those of the
        instances alive now (services/fleet/instances.py, which is built after the jobs);
        `here` its machine and address (what an interrupted job says: jobs/interrupted.py)."""
        self._db = db
        self._bus = bus
        self._audit = audit
        self.undo_tools = undo
        self._instance_id = instance_id
        self._alive_ids = alive_ids
        self._here = here
        self._live: dict[str, _Live] = {}
        self._executor = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="kvmm-job")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._undo_task: asyncio.Task[None] | None = None
        # Progress flushes and undo runs (kept referenced until they end).
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called by Manager.start(): jobs run as tasks on this loop."""
        self._loop = loop
        # Jobs cannot survive a restart: whatever was running is gone. What they had
        # recorded as half-made is removed once their host is connected again. Only jobs
        # of instances that are gone: another instance sharing the database is running
        # its own (services/fleet/instances.py).
        alive = self._alive_ids()
        orphan = or_(Job.instance_id.is_(None), Job.instance_id.not_in(alive))
        self._recover(loop, orphan, self._here(), with_lost=True)

    def sweep_gone(self) -> int:
        """The jobs of instances that died while others kept running (kill -9, power
        loss): failed and undone like a restart's. Run by the singleton-lease holder's
        heartbeat (services/fleet/instances.py); returns how many jobs it failed."""
        loop = self._loop
        if loop is None:
            return 0
        alive = self._alive_ids()
        # Rows without an instance are a restart's business (attach_loop), not a sweep's.
        gone = and_(Job.instance_id.is_not(None), Job.instance_id.not_in(alive))
        return self._recover(loop, gone, None, with_lost=False)

    def _recover(
        self,
        loop: asyncio.AbstractEventLoop,
        which: Any,
        here: job_interrupted.Here | None,
        *,
        with_lost: bool,
    ) -> int:
        """Fail (and undo) the jobs `which` selects; `here` is given at this instance's
        start (a job of this machine and address was this server's: "restarted"), None
        for the lease holder's sweep (another instance stopped)."""
        with self._db.begin() as s:
            jobs = list(s.scalars(select(Job).where(Job.state.in_(("queued", "running")), which)))
            table = job_interrupted.reasons(s, (j.instance_id for j in jobs), here)
            reason = {j.id: job_interrupted.reason_for(table, j.instance_id, here) for j in jobs}
            undo = [
                (
                    job_undo.Interrupted(
                        job.id, job.target, job_undo.normalize(job.result["undo"])
                    ),
                    reason[job.id],
                )
                for job in jobs
                if isinstance(job.result, dict) and job.result.get("undo")
            ]
            # Jobs failed by a lost host whose undo had not run yet when we stopped.
            lost = [
                (job_undo.Interrupted(job.id, job.target, job_undo.normalize(job.result["undo"])),
                 job.error["message"].removesuffix(f"; {UNDO_PENDING}"))
                for job in s.scalars(
                    select(Job).where(
                        Job.state == "failed",
                        Job.error["code"].as_string() == "host_unavailable",
                        which,
                    )
                )
                if isinstance(job.result, dict) and job.result.get("undo")
            ] if with_lost else []  # fmt: skip
            for job in jobs:
                # By id: only what was read above is failed (and undone) here.
                s.execute(
                    update(Job)
                    .where(Job.id == job.id, Job.state.in_(("queued", "running")))
                    .values(
                        state="failed",
                        error={"code": "interrupted", "message": reason[job.id]},
                        result=None,
                        updated_at=utcnow(),
                    )
                    .execution_options(synchronize_session=False)
                )
        if undo:
            if self._undo_task is None or self._undo_task.done():
                self._undo_task = loop.create_task(self._undo_interrupted(undo), name="job-undo")
            else:
                self._keep(loop.create_task(self._undo_interrupted(undo), name="job-undo"))
        for interrupted, why in lost:
            self._keep(loop.create_task(self._undo_after_host_loss(interrupted, why)))
        return len(jobs)

    async def undo_finished(self) -> None:
        """Resolves once the undo of the jobs interrupted by the last stop has run."""
        task = self._undo_task
        if task is not None:
            await asyncio.wait({task})  # its outcome is its own business (logged there)

    async def shutdown(self) -> None:
        if self._undo_task is not None:
            self._undo_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        for live in list(self._live.values()):
            live.progress._request_cancel()
        pending = [live.future for live in self._live.values()]
        if pending:
            await asyncio.wait(pending, timeout=10)
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- API ---------------------------------------------------------------------------

    def start(
        self,
        kind: str,
        target: str,
        fn: Callable[[JobProgress], Any],
        user: Any = None,
        *,
        host: str = "",
    ) -> str:
        """Record a job and run it in the background; returns its id.

        Callable from the event loop or from a worker thread. When called while serving a
        state-changing API request, that request's audit entry is written in the same
        transaction as the job row and carries the job id.
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("JobService used before Manager.start()")
        username = getattr(user, "username", user)
        with self._db.begin() as s:
            job = Job(
                kind=kind,
                target=target,
                state="queued",
                created_by=username,
                instance_id=self._instance_id(),
            )
            s.add(job)
            s.flush()
            job_id = job.id
            rec = audit_mod.current_request.get()
            if rec is not None and rec.entry_id is None:
                rec.job_id = job_id
                rec.status = rec.status or 202
                rec.entry_id = self._audit.record(rec, session=s)
        progress = JobProgress(self, job_id, kind, target, host, username)
        if _running_loop() is loop:
            self._launch(job_id, fn, progress)
        else:
            loop.call_soon_threadsafe(self._launch, job_id, fn, progress)
        return job_id

    def get(self, job_id: str) -> Job:
        with self._db() as s:
            job = s.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id}", field="job_id")
        return job

    def list(
        self,
        *,
        state: str | None = None,
        kind: str | None = None,
        user: str | None = None,
        visible_to: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[Job], int]:
        """Newest first. `user`: that user's jobs only; `visible_to`: the jobs that user
        may read under the ownership rule (their own and unowned ones)."""
        if state is not None and state not in JOB_STATES:
            raise InvalidInput(f"state must be one of {', '.join(JOB_STATES)}", field="state")
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be between 1 and 1000", field="limit")
        if offset < 0:
            raise InvalidInput("offset must not be negative", field="offset")
        q = select(Job)
        if state is not None:
            q = q.where(Job.state == state)
        if kind is not None:
            q = q.where(Job.kind == kind)
        if user is not None:
            q = q.where(Job.created_by == user)
        if visible_to is not None:
            q = q.where(or_(Job.created_by == visible_to, Job.created_by.is_(None)))
        with self._db() as s:
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            jobs = list(s.scalars(q.order_by(Job.created_at.desc()).limit(limit).offset(offset)))
        return jobs, total

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state in FINAL_STATES:
            raise Conflict(f"job {job_id} already {job.state}", field="job_id")
        live = self._live.get(job_id)
        if live is not None:
            live.progress._request_cancel()
        else:
            # A job row without a runner (should not happen after attach_loop): close it.
            self._finish_row(job_id, "cancelled", None, None, None)
        return self.get(job_id)

    async def wait(self, job_id: str) -> Job:
        """Wait until the job reaches a final state and return its row (bound it with
        `asyncio.timeout`)."""
        live = self._live.get(job_id)
        if live is not None:
            await asyncio.shield(live.future)
        return self.get(job_id)

    # -- running -----------------------------------------------------------------------

    def _launch(self, job_id: str, fn: Callable[[JobProgress], Any], p: JobProgress) -> None:
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        self._live[job_id] = _Live(p, future)
        task = self._loop.create_task(self._run(job_id, fn, p), name=f"job-{job_id}")
        task.add_done_callback(lambda _t: self._live.pop(job_id, None))

    async def _run(self, job_id: str, fn: Callable[[JobProgress], Any], p: JobProgress) -> None:
        live = self._live[job_id]
        state, result, error = "failed", None, None
        try:
            if p.cancelled():
                raise Cancelled(f"job {job_id} was cancelled")
            await asyncio.to_thread(self._set_state, job_id, "running")
            self._publish(p, "job.progress", state="running")
            if inspect.iscoroutinefunction(fn):
                # A job's libvirt calls have no per-call deadline (virt/calls.py): the job
                # itself shows progress and can be cancelled.
                with job_calls():
                    result = await fn(p)
            else:
                assert self._loop is not None
                result = await self._loop.run_in_executor(self._executor, fn, p)
            state = "done"
        except Cancelled as e:
            state, error = "cancelled", e.to_dict()
        except KvmmError as e:
            error = e.to_dict()
        except Exception as e:
            log.exception("job %s (%s %s) crashed", job_id, p.kind, p.target)
            error = {"code": "internal_error", "message": f"{type(e).__name__}: {e}"}
        p.finished = True
        undo = None
        if state == "failed" and error and error.get("code") == "host_unavailable" and p._undo:
            # The host went away under the job (libvirtd restarted, network gone): its
            # own cleanup could not reach the host either. What it recorded is removed
            # once the host is connected again.
            undo = job_undo.Interrupted(job_id, p.target, list(p._undo))
            reason = error["message"]
            error = {**error, "message": f"{reason}; {UNDO_PENDING}"}
        try:
            # Kept in the row until done, so a restart meanwhile still removes them.
            kept = {"undo": undo.records} if undo is not None else result
            await self._finish_row_retrying(job_id, state, kept, error, p)
        except Exception:
            # A result that is not JSON-able must not leave the job "running" forever.
            log.exception("job %s: storing the result failed", job_id)
            await self._finish_row_retrying(
                job_id,
                "failed",
                None,
                {"code": "internal_error", "message": "the job's result could not be stored"},
                p,
            )
            state = "failed"
        self._publish(p, "job.done", state=state, result=result, error=error)
        if not live.future.done():
            live.future.set_result(None)
        if undo is not None:
            self._keep(self._loop.create_task(self._undo_after_host_loss(undo, reason)))

    async def _finish_row_retrying(self, *args: Any) -> None:
        """_finish_row, waiting out a database locked by another process (up to
        FINISH_RETRY_SECONDS): a job must not stay 'running' because of a busy lock."""
        deadline = time.monotonic() + FINISH_RETRY_SECONDS
        delay = 0.1
        while True:
            try:
                await asyncio.to_thread(self._finish_row, *args)
                return
            except OperationalError as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning(
                    "job %s: database busy, retrying the final write: %s", args[0], exc.orig
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _undo_interrupted(self, jobs: list[tuple[job_undo.Interrupted, str]]) -> None:
        """Undo each interrupted job; its message keeps why it was interrupted."""
        for job, reason in jobs:
            message = await job_undo.undo_job(self.undo_tools, job)
            await asyncio.to_thread(self._set_error_message, job.job_id, f"{reason}; {message}")

    async def _undo_after_host_loss(self, job: job_undo.Interrupted, reason: str) -> None:
        message = await job_undo.undo_job(self.undo_tools, job, wait=HOST_BACK_WAIT_SECONDS)
        await asyncio.to_thread(self._set_error_message, job.job_id, f"{reason}; {message}")

    def _schedule_flush(self, p: JobProgress) -> None:
        """Deliver `p`'s latest figures once the rate-limit interval has passed (callable
        from any thread)."""
        loop = self._loop
        if loop is None:
            p._flush_pending = False
            return

        def arm() -> None:
            loop.call_later(_DB_INTERVAL, lambda: self._keep(loop.create_task(self._flush(p))))

        if _running_loop() is loop:
            arm()
        else:
            loop.call_soon_threadsafe(arm)

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, p: JobProgress) -> None:
        p._flush_pending = False
        if p.finished:
            return  # the final write has the last figures
        p._last_publish = p._last_db = time.monotonic()
        try:
            await asyncio.to_thread(self._write_progress, p)
        except OperationalError as exc:  # a busy database: the next update writes them
            log.warning("job %s: progress not written: %s", p.id, exc.orig)
        # After the write: whoever sees this event and reads the job gets these figures.
        if not p.finished:
            self._publish(p, "job.progress", state="running")

    def _set_error_message(self, job_id: str, message: str) -> None:
        """The final message of a failed job whose undo has run (its records go)."""
        with self._db.begin() as s:
            job = s.get(Job, job_id)
            if job is not None and job.error is not None:
                job.error = {**job.error, "message": message}
                job.result = None

    def _write_undo(self, p: JobProgress, undo: list[dict[str, Any]]) -> None:
        with self._db.begin() as s:
            s.execute(update(Job).where(Job.id == p.id).values(result={"undo": undo}))

    def _set_state(self, job_id: str, state: str) -> None:
        with self._db.begin() as s:
            s.execute(update(Job).where(Job.id == job_id).values(state=state, updated_at=utcnow()))

    def _write_progress(self, p: JobProgress) -> None:
        with self._db.begin() as s:
            s.execute(
                update(Job)
                .where(Job.id == p.id)
                .values(
                    progress_done=p.done,
                    progress_total=p.total,
                    message=p.message[:4000],
                    updated_at=utcnow(),
                )
            )

    def _finish_row(
        self,
        job_id: str,
        state: str,
        result: Any,
        error: dict[str, Any] | None,
        p: JobProgress | None,
    ) -> None:
        values: dict[str, Any] = {
            "state": state,
            "result": result,
            "error": error,
            "updated_at": utcnow(),
        }
        if p is not None:
            values.update(progress_done=p.done, progress_total=p.total, message=p.message[:4000])
        with self._db.begin() as s:
            s.execute(update(Job).where(Job.id == job_id).values(**values))

    def _publish(self, p: JobProgress, kind: str, **data: Any) -> None:
        event = Event(
            kind=kind,
            host=p.host,
            subject=p.id,
            data={
                "kind": p.kind,
                "target": p.target,
                "done": p.done,
                "total": p.total,
                "message": p.message,
                "created_by": p.owner,
                **data,
            },
        )
        loop = self._loop
        # The bus's queues belong to the loop: publish from there, whichever thread we are on.
        if loop is None or _running_loop() is loop:
            self._bus.publish(event)
        else:
            loop.call_soon_threadsafe(self._bus.publish, event)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
