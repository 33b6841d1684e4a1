"""Bounded libvirt calls: every call that reaches a host has a deadline chosen by its kind,
and a worker left behind by a call past its deadline is accounted for.

libvirt-python calls block a thread and cannot be interrupted: a call to a frozen daemon
returns when the daemon answers, or when keepalive declares the connection dead. So a
deadline cannot stop the call; it stops the *caller* from waiting. The API answers at the
deadline (504, "may still complete"), and the worker thread stays busy until libvirt
returns. Those workers are counted per host ("overdue"): when every worker of a host is
overdue, new calls are refused at once (503) instead of queueing behind them. Each host
has its own pool, so a stuck host never takes a worker from another one.

Kinds:
- read: getters, listings, stats (seconds);
- lifecycle: anything that changes a host (tens of seconds);
- job: long operations (copies, migrations, uploads) that already run as jobs with
  progress and cancel; unbounded here, since keepalive ends them if the host freezes.
Calls made inside a job default to `job`; elsewhere they default to `lifecycle`, the safe
side for a call that changes something (a slow but healthy host must not see a write
reported as timed out after seconds). So every call that only reads says `kind="read"`,
through the services' run helpers (tests/kvmmanager/services/test_call_kinds.py holds the
read-only service methods to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from kvmmanager.core.config import LibvirtSettings
from kvmmanager.core.errors import HostTimeout, HostUnavailable

T = TypeVar("T")
CallKind = Literal["read", "lifecycle", "job"]

_in_job: ContextVar[bool] = ContextVar("kvmm_in_job", default=False)


@contextlib.contextmanager
def job_calls() -> Iterator[None]:
    """Inside this block (a job's body), calls default to the `job` kind."""
    token = _in_job.set(True)
    try:
        yield
    finally:
        _in_job.reset(token)


def resolve_kind(kind: CallKind | None) -> CallKind:
    if kind is not None:
        return kind
    return "job" if _in_job.get() else "lifecycle"


def deadline_for(settings: LibvirtSettings, kind: CallKind) -> float | None:
    if kind == "read":
        return settings.deadline_read_seconds
    if kind == "lifecycle":
        return settings.deadline_lifecycle_seconds
    return None


def op_name(fn: Callable[..., Any]) -> str:
    """A readable name for the operation behind `fn`: the function that built the lambda
    (`VmService.start`), or a libvirt method (`virDomain.destroy`)."""
    if isinstance(fn, functools.partial):
        return op_name(fn.func)
    owner = getattr(fn, "__self__", None)
    name: str | None = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if owner is not None and not isinstance(owner, type) and name:
        return f"{type(owner).__name__}.{name.rsplit('.', 1)[-1]}"
    if not name:
        return type(fn).__name__
    return name.split(".<locals>", 1)[0]


@dataclass(eq=False)
class Call:
    op: str
    kind: CallKind
    deadline: float | None
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    abandoned: bool = False  # its caller gave up before a worker took it: never runs
    # Set (on the caller's loop) when the call is refused while still queued.
    refusal: asyncio.Future[HostUnavailable] | None = None


class HostWorkers:
    """One host's worker threads, with deadlines and the account of overdue calls."""

    def __init__(
        self, host: str, size: int, on_overdue: Callable[[Call], None] | None = None
    ) -> None:
        self.host = host
        self.size = max(1, size)
        self._executor = ThreadPoolExecutor(self.size, thread_name_prefix=f"libvirt-{host}")
        self._lock = threading.Lock()
        self._queued: set[Call] = set()
        self._running: set[Call] = set()
        self._overdue: set[Call] = set()
        self._on_overdue = on_overdue

    def overdue(self) -> list[Call]:
        """Calls past their deadline whose worker libvirt has not released yet."""
        with self._lock:
            return sorted(self._overdue, key=lambda c: c.started_at or 0.0)

    def _busy_with(self) -> str:
        """What holds the workers, oldest first (e.g. one VM's calls stuck behind its hung
        QEMU monitor): the user sees which VM or operation to look at."""
        now = time.monotonic()
        with self._lock:
            running = sorted(self._running, key=lambda c: c.started_at or 0.0)
        if not running:
            return ""
        listed = ", ".join(f"{c.op} ({now - (c.started_at or now):.0f} s)" for c in running[:4])
        more = f" and {len(running) - 4} more" if len(running) > 4 else ""
        return f" (its workers are busy with: {listed}{more})"

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def refuse_queued(self, reason: Callable[[str], HostUnavailable]) -> int:
        """Refuse every call still waiting for a worker (the host stopped answering, or
        its connection is gone): their callers get `reason(op)` now instead of waiting
        behind workers stuck on the host. Calls already running are left to their
        deadline. Returns how many were refused."""
        with self._lock:
            refused = list(self._queued)
            self._queued.clear()
            for call in refused:
                call.abandoned = True
        for call in refused:
            fut = call.refusal
            if fut is None:
                continue

            def settle(fut: asyncio.Future[HostUnavailable] = fut, op: str = call.op) -> None:
                if not fut.done():
                    fut.set_result(reason(op))

            # The caller may wait on another event loop (a TestClient's, a probe's).
            with contextlib.suppress(RuntimeError):  # that loop is closed: caller gone
                fut.get_loop().call_soon_threadsafe(settle)
        return len(refused)

    async def call(
        self, fn: Callable[[], T], *, op: str, kind: CallKind, deadline: float | None
    ) -> T:
        stuck = self.overdue()
        if len(stuck) >= self.size:
            oldest = stuck[0]
            age = time.monotonic() - (oldest.started_at or oldest.queued_at)
            raise HostUnavailable(
                f"host '{self.host}' is not answering: all {self.size} of its libvirt "
                f"workers are still waiting for calls past their deadline (oldest: "
                f"{oldest.op}, {age:.0f} s); {op} was not sent",
                field="host",
            )
        loop = asyncio.get_running_loop()
        call = Call(op, kind, deadline, refusal=loop.create_future())

        def body() -> T:
            with self._lock:
                if call.abandoned:
                    raise asyncio.CancelledError
                self._queued.discard(call)
                call.started_at = time.monotonic()
                self._running.add(call)
            try:
                return fn()
            finally:
                with self._lock:
                    self._running.discard(call)
                    self._overdue.discard(call)

        with self._lock:
            self._queued.add(call)
        fut = loop.run_in_executor(self._executor, body)
        assert call.refusal is not None
        refusal = call.refusal
        try:
            # asyncio.wait, not wait_for: Python 3.11's wait_for can swallow a
            # cancellation that meets a result, which would let a stopping host's
            # supervisor run on. Neither future is cancelled by a timeout here.
            either: set[asyncio.Future[Any]] = {fut, refusal}
            await asyncio.wait(either, timeout=deadline, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            with self._lock:
                call.abandoned = call.started_at is None  # not sent: never will be
            fut.add_done_callback(_ignore_outcome)
            raise
        finally:
            with self._lock:
                self._queued.discard(call)
        if refusal.done():
            # Refused before a worker took it: it never runs (abandoned under the lock).
            fut.add_done_callback(_ignore_outcome)
            raise refusal.result()
        if fut.done():
            return fut.result()
        with self._lock:
            started = call.started_at is not None
            if not started:
                call.abandoned = True
            elif call in self._running:
                self._overdue.add(call)
        if fut.done() and not fut.cancelled():
            return fut.result()  # it answered just as the deadline passed
        # Nobody awaits it any more: retrieve its outcome so asyncio does not warn.
        fut.add_done_callback(_ignore_outcome)
        if not started:
            raise HostTimeout(
                f"host '{self.host}': {op} waited {deadline:g} s for a free libvirt worker "
                f"and was not sent; nothing was changed{self._busy_with()}",
                field="host",
            )
        if self._on_overdue is not None:
            self._on_overdue(call)
        raise HostTimeout(
            f"host '{self.host}' did not answer {op} within {deadline:g} s (the {kind} "
            "deadline); libvirt may still complete the call: check the result before "
            "retrying",
            field="host",
        )


def _ignore_outcome(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
