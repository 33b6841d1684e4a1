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
Per VM: calls that name a VM (`vm=`) hold at most `per_vm` of the host's workers at once.
A VM whose QEMU monitor froze holds every libvirt call on it (the first waits on the
monitor, the next on the domain's job lock), so without a cap a few requests on that one
VM fill the host's workers and its other VMs starve. A call over the cap waits for one of
the VM's own calls to finish without holding a worker, and is refused at once (503 naming
the VM, the host and the operation) as soon as one of them is past its deadline. While
any call of a VM is past its deadline and still running, every new call for that VM is
refused at once (503 naming the stuck calls), even when the cap has a free place: a VM
whose monitor hung would make it wait for its job lock too. When the stuck call returns,
calls on the VM flow again.

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
# How often a call over its VM's cap looks whether a place has come free.
VM_SLOT_POLL_SECONDS = 0.05
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
    vm: str | None = None  # the VM the call is about (as its caller named it)
    vm_key: str | None = None  # the same VM whether named by name or UUID (the cap's key)
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    abandoned: bool = False  # its caller gave up before a worker took it: never runs
    # Set (on the caller's loop) when the call is refused while still queued.
    refusal: asyncio.Future[HostUnavailable] | None = None


class HostWorkers:
    """One host's worker threads, with deadlines and the account of overdue calls."""

    def __init__(
        self,
        host: str,
        size: int,
        on_overdue: Callable[[Call], None] | None = None,
        per_vm: int = 2,
        vm_key: Callable[[str], str] | None = None,
    ) -> None:
        self.host = host
        self.size = max(1, size)
        self.per_vm = max(1, per_vm)
        self._by_vm: dict[str, set[Call]] = {}
        # A VM is named by name or by UUID: both must count under one cap.
        self._vm_key = vm_key or (lambda vm: vm)
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
                self._release_vm(call)
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

    def _release_vm(self, call: Call) -> None:
        """Give back the call's place under its VM's cap (idempotent; under the lock)."""
        if call.vm_key is None:
            return
        mine = self._by_vm.get(call.vm_key)
        if mine is not None:
            mine.discard(call)
            if not mine:
                del self._by_vm[call.vm_key]

    def _vm_refusal(self, vm: str, op: str, stuck: list[Call]) -> HostUnavailable:
        now = time.monotonic()
        listed = ", ".join(f"{c.op} ({now - (c.started_at or now):.0f} s)" for c in stuck[:3])
        more = f" and {len(stuck) - 3} more" if len(stuck) > 3 else ""
        return HostUnavailable(
            f"vm '{vm}' on host '{self.host}' is not answering: "
            f"{_still_running(len(stuck))} ({listed}{more}); {op} was not sent "
            "(its QEMU monitor may be hung; the host's other VMs are not affected)",
            field="vm",
            details={
                "host": self.host,
                "vm": vm,
                "operation": op,
                "stuck_calls": [c.op for c in stuck],
            },
        )

    async def _take_vm_slot(self, call: Call) -> None:
        """Count `call` under its VM's cap, waiting (without a worker) while the VM has
        `per_vm` calls in flight; refused at once while one of those is overdue."""
        vm, key = call.vm, call.vm_key
        assert vm is not None and key is not None
        while True:
            with self._lock:
                mine = self._by_vm.setdefault(key, set())
                # Overdue first, even with a free place under the cap: a VM with a call
                # still running past its deadline (a hung monitor) would only stall the
                # next one too (it waits on the domain's job lock, e.g. for 30-60 s).
                stuck = sorted(
                    (c for c in mine if c in self._overdue), key=lambda c: c.started_at or 0.0
                )
                if not stuck and len(mine) < self.per_vm:
                    mine.add(call)
                    return
                if not mine:
                    del self._by_vm[key]
                busy = sorted(mine, key=lambda c: c.started_at or c.queued_at)
            if stuck:
                raise self._vm_refusal(vm, call.op, stuck)
            waited = time.monotonic() - call.queued_at
            if call.deadline is not None and waited >= call.deadline:
                now = time.monotonic()
                listed = ", ".join(
                    f"{c.op} ({now - (c.started_at or c.queued_at):.0f} s)" for c in busy
                )
                raise HostTimeout(
                    f"host '{self.host}': {call.op} waited {call.deadline:g} s behind vm "
                    f"'{vm}''s other calls ({listed}) and was not sent; nothing was changed",
                    field="vm",
                    details={"host": self.host, "vm": vm, "operation": call.op},
                )
            # Polled, not signalled: the calls that free the slot may finish on another
            # event loop or in a worker thread.
            await asyncio.sleep(VM_SLOT_POLL_SECONDS)

    async def call(
        self,
        fn: Callable[[], T],
        *,
        op: str,
        kind: CallKind,
        deadline: float | None,
        vm: str | None = None,
    ) -> T:
        stuck = self.overdue()
        if len(stuck) >= self.size:
            oldest = stuck[0]
            age = time.monotonic() - (oldest.started_at or oldest.queued_at)
            raise HostUnavailable(
                f"host '{self.host}' is not answering: {_all_workers_waiting(self.size)} "
                f"({'oldest: ' if self.size > 1 else ''}{oldest.op}, {age:.0f} s); "
                f"{op} was not sent",
                field="host",
            )
        loop = asyncio.get_running_loop()
        call = Call(op, kind, deadline, vm=vm, refusal=loop.create_future())
        timeout = deadline
        if vm is not None:
            call.vm_key = self._vm_key(vm)
            await self._take_vm_slot(call)
            if deadline is not None:
                # The time spent waiting for the VM's slot counts against the deadline.
                timeout = max(0.0, deadline - (time.monotonic() - call.queued_at))

        def body() -> T:
            with self._lock:
                if call.abandoned:
                    self._release_vm(call)
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
                    self._release_vm(call)

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
            await asyncio.wait(either, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            with self._lock:
                call.abandoned = call.started_at is None  # not sent: never will be
                if call.abandoned:
                    self._release_vm(call)
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
                self._release_vm(call)
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


def _still_running(n: int) -> str:
    """'1 of its libvirt calls is ... its deadline' / '2 of its ... are ... their deadline'."""
    if n == 1:
        return "1 of its libvirt calls is still running past its deadline"
    return f"{n} of its libvirt calls are still running past their deadline"


def _all_workers_waiting(n: int) -> str:
    if n == 1:
        return "its only libvirt worker is still waiting for a call past its deadline"
    return f"all {n} of its libvirt workers are still waiting for calls past their deadline"


def _ignore_outcome(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
