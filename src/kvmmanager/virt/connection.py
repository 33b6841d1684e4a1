"""One libvirt connection per host: open, keepalive, events, reconnect with backoff, resync.

This module holds the host's state machine (connecting, connected, not responding,
reconnecting, failed) and the running of calls; its other jobs live beside it:

- calls: every blocking libvirt call runs in the host's own worker pool (`run`), so a
  slow or dead host never blocks the event loop or another host, and every call has a
  deadline by kind (virt/calls.py). Opening a connection runs in a daemon thread of its
  own (virt/daemon_thread.py), because an unreachable host can hold `virConnectOpen` for
  minutes and must neither take a worker away nor keep the process from exiting; an open
  unanswered for `connect_seconds` makes the host "not responding" (a frozen daemon
  accepts the socket but answers nothing).
- responsiveness (virt/heartbeat.py): a heartbeat marks the host "not responding" when
  the daemon stops answering, refusing its calls up front; libvirt's keepalive then
  closes the connection, and the host stays "not responding" while the reconnect waits
  for the daemon. A connection that ends otherwise (daemon gone) makes it "reconnecting".
- events (virt/host_events.py): callbacks queue re-reads of single objects into the
  inventory, serialized per object and after any running resync.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from kvmmanager.core.config import LibvirtSettings, Settings
from kvmmanager.core.errors import (
    HostTimeout,
    HostUnavailable,
    KvmmError,
    LibvirtRefused,
    Timeout,
    Unsupported,
)
from kvmmanager.virt import liveness, readers, session
from kvmmanager.virt.aioloop import ensure_event_loop
from kvmmanager.virt.backoff import Backoff
from kvmmanager.virt.calls import CallKind, HostWorkers, deadline_for, op_name, resolve_kind
from kvmmanager.virt.daemon_thread import in_daemon_thread
from kvmmanager.virt.errors import (
    libvirt_message,
    translate_libvirt_error,
    unsupported_function,
    unsupported_in_words,
)
from kvmmanager.virt.events import Event, EventBus
from kvmmanager.virt.heartbeat import NOT_RESPONDING, Heartbeat
from kvmmanager.virt.host_events import HostEvents, Serializer
from kvmmanager.virt.inventory import Inventory
from kvmmanager.virt.preopen import AheadOpens
from kvmmanager.virt.session import is_remote_uri, prepare_uri

__all__ = [
    "NOT_RESPONDING",
    "STATUSES",
    "HostConnection",
    "ensure_event_loop",
    "is_remote_uri",
    "prepare_uri",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

LOCAL_MAX_BACKOFF_SECONDS = 2.0
STATUSES = ("disconnected", "connecting", "connected", NOT_RESPONDING, "reconnecting", "failed")
# Closing a connection deregisters its callbacks: round trips that hang on a frozen daemon.
TEARDOWN_SECONDS = 5.0


class HostConnection(Heartbeat, HostEvents):
    def __init__(
        self,
        name: str,
        uri: str,
        bus: EventBus,
        inventory: Inventory,
        settings: Settings | LibvirtSettings,
        ahead: AheadOpens | None = None,
    ) -> None:
        self.name = name
        self.uri = uri
        # `serve` may have begun this host's first open already (virt/preopen.py).
        self.ahead = ahead
        self.bus = bus
        self.inventory = inventory
        self.settings: LibvirtSettings = (
            settings.libvirt if isinstance(settings, Settings) else settings
        )
        self.status = "disconnected"
        self.status_reason = "not started"
        self.status_since = time.time()  # wall clock of the last status change
        # When the inventory last matched libvirt for sure: the last answer libvirtd gave
        # before the host stopped being "connected" (None while connected, or before the
        # first connect).
        self.stale_since: float | None = None
        # Wall clock of the next connection attempt while one is waited for (Backoff).
        self.next_attempt_at: float | None = None
        # Wall clock of libvirtd's last answer to any call (a libvirt error from a live
        # connection is an answer too); set from worker threads (a float store is atomic).
        self.last_answer: float | None = None
        # Per-connection facts (e.g. the KVM probe result), dropped on every reconnect
        # because the host behind the URI may have been upgraded or replaced meanwhile.
        self.cache: dict[str, Any] = {}
        # Last known answers (e.g. the probe's), kept across reconnects: what a caller
        # may fall back to, saying so, when the current connection has no answer yet.
        self.facts: dict[str, Any] = {}
        self.workers = HostWorkers(
            name,
            self.settings.workers_per_host,
            self._call_overdue,
            self.settings.calls_per_vm,
            self._vm_key,
        )
        self._conn: libvirt.virConnect | None = None
        self._gen = 0
        self._lost: asyncio.Event | None = None
        self._lost_reason = ""
        self._resynced: asyncio.Event | None = None
        self._status_changed: asyncio.Event | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._serial = Serializer()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_heartbeat: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<HostConnection {self.name} {self.uri} {self.status}>"

    # ---- public API --------------------------------------------------------------------

    @property
    def conn(self) -> libvirt.virConnect:
        """The live virConnect, for code already running in a worker thread."""
        conn = self._conn
        if conn is None or self.status != "connected":
            raise self._unavailable()
        return conn

    @property
    def connected(self) -> bool:
        return self.status == "connected"

    @property
    def never_listed(self) -> bool:
        """The host has stopped (or failed) before its first full listing: the inventory
        holds nothing of it, which must not read as "this host has no VMs". A host still
        making its first connection is not counted (it lists within the connect time)."""
        return self.stale_since is None and self.status in (
            NOT_RESPONDING,
            "failed",
            "reconnecting",
        )

    async def start(self) -> None:
        if self._supervisor is not None:
            return
        ensure_event_loop()
        self._loop = asyncio.get_running_loop()
        self._lost = asyncio.Event()
        self._resynced = asyncio.Event()
        self._status_changed = asyncio.Event()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"host-{self.name}")

    async def stop(self) -> None:
        sup, self._supervisor = self._supervisor, None
        if sup is not None:
            sup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sup
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        conn, self._conn = self._conn, None
        self._gen += 1
        if conn is not None:
            await self._teardown(conn)
        self.workers.shutdown()
        self._set_status("disconnected", "stopped")

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        kind: CallKind | None = None,
        op: str | None = None,
        deadline: float | None = None,
        vm: str | None = None,
        **kwargs: Any,
    ) -> T:
        """Run a blocking libvirt call in this host's worker pool, within the deadline of
        its `kind` (default: `job` inside a job, else `lifecycle`; see virt/calls.py), or
        an explicit `deadline` in seconds. A call about one VM names it (`vm`): it then
        counts under that VM's cap of calls in flight (`calls_per_vm`, virt/calls.py).

        Raises HostUnavailable when the host is not connected (or not responding),
        HostTimeout past the deadline, and translates libvirtError into the matching
        KvmmError."""
        conn = self._conn
        if conn is None or self.status != "connected":
            raise self._unavailable()
        kind = resolve_kind(kind)
        op = op or op_name(fn)
        call = functools.partial(self._guarded, conn, self._gen, fn, args, kwargs, op)
        return await self.workers.call(
            call,
            op=op,
            kind=kind,
            deadline=deadline if deadline is not None else deadline_for(self.settings, kind),
            vm=vm,
        )

    def _vm_key(self, vm: str) -> str:
        """The VM's UUID when the inventory knows it (callers name VMs by name or UUID),
        else what the caller gave."""
        try:
            return self.inventory.domain(self.name, vm).uuid
        except KvmmError:
            return vm

    def refuse_unless_connected(self, op: str) -> None:
        """Raise HostUnavailable naming this host, its state and `op` ("... was not
        sent") unless the host is connected: for checks made before any call."""
        if self._conn is None or self.status != "connected":
            raise self._refusal(op)

    async def wait_status(self, *wanted: str, seconds: float = 30.0) -> str:
        """Wait until the status is one of `wanted` (for callers that just added a host)."""
        assert self._status_changed is not None, "start() first"
        async with asyncio.timeout(seconds):
            while self.status not in wanted:
                self._status_changed.clear()
                await self._status_changed.wait()
        return self.status

    async def wait_connected(self, seconds: float = 30.0) -> None:
        try:
            await self.wait_status("connected", seconds=seconds)
        except TimeoutError:
            raise self._unavailable() from None

    def status_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uri": self.uri,
            "status": self.status,
            "reason": self._reason_with_overdue(),
            "since": self.status_since,
            "stale_since": self.stale_since,
            "overdue_calls": len(self.workers.overdue()),
            "next_attempt_at": self.next_attempt_at,
        }

    def _reason_with_overdue(self) -> str:
        """The status reason, plus the calls past their deadline that still hold workers:
        a "connected" host whose workers are all stuck (e.g. behind one VM's hung QEMU
        monitor) must not look healthy while its calls wait for a worker."""
        overdue = self.workers.overdue()
        if not overdue:
            return self.status_reason
        now = time.monotonic()
        listed = ", ".join(
            f"{c.op} ({now - (c.started_at or c.queued_at):.0f} s)" for c in overdue[:3]
        )
        more = f" and {len(overdue) - 3} more" if len(overdue) > 3 else ""
        calls = "call" if len(overdue) == 1 else "calls"
        text = f"{len(overdue)} {calls} overdue: {listed}{more}"
        return f"{self.status_reason}; {text}" if self.status_reason else text

    # ---- status ------------------------------------------------------------------------

    def _unavailable(self) -> HostUnavailable:
        reason = f": {self.status_reason}" if self.status_reason else ""
        return HostUnavailable(f"host '{self.name}' is {self.status}{reason}", field="host")

    def _refusal(self, op: str) -> HostUnavailable:
        err = self._unavailable()
        return HostUnavailable(f"{err.message}; {op} was not sent", field="host")

    def _set_status(self, status: str, reason: str = "") -> None:
        if (status, reason) == (self.status, self.status_reason):
            return
        if status != self.status:
            self.status_since = time.time()
            if self.status == "connected":
                # Not the moment of this change: the daemon may have been silent for
                # seconds before anyone concluded so.
                self.stale_since = min(self.last_answer or self.status_since, self.status_since)
            elif status == "connected":
                self.stale_since = None
        self.status, self.status_reason = status, reason
        log.info("host %s: %s %s", self.name, status, reason)
        if status != "connected":
            # Calls still waiting for a worker would wait behind workers stuck on the
            # host (or run on a connection that is gone): refuse them now, with the
            # reason, like a call made from now on.
            self.workers.refuse_queued(self._refusal)
        if self._status_changed is not None:
            self._status_changed.set()
        self.bus.publish(
            Event(
                "host.status",
                host=self.name,
                subject=self.name,
                data={"status": status, "reason": reason}
                | (
                    {}
                    if self.next_attempt_at is None
                    else {"next_attempt_at": self.next_attempt_at}
                ),
            )
        )

    # ---- threads -----------------------------------------------------------------------

    def _guarded(
        self,
        conn: libvirt.virConnect,
        gen: int,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        op: str = "",
    ) -> T:
        try:
            with liveness.uses.using(conn):
                result = fn(*args, **kwargs)
            self.last_answer = time.time()
            return result
        except libvirt.libvirtError as exc:
            dead = not session.alive(conn)
            if not dead:
                self.last_answer = time.time()
            err = translate_libvirt_error(exc, connection_dead=dead)
            if dead:
                self._notify_lost(gen, f"connection lost: {libvirt_message(exc)}")
                # libvirt's words ("connection closed due to keepalive timeout") do not
                # say which host: a manager of many hosts must.
                err.message = f"host '{self.name}': {err.message}"
                err.args = (err.message,)
            elif isinstance(err, LibvirtRefused):
                # libvirt's "internal error: Child process (...) unexpected exit status"
                # names neither the host nor what the user asked for.
                err.message = (
                    f"host '{self.name}': libvirt refused {op or op_name(fn)}: {err.message}"
                )
                err.args = (err.message,)
                err.details = {
                    **(err.details or {}),
                    "host": self.name,
                    "operation": op or op_name(fn),
                }
            elif isinstance(err, Unsupported) and (function := unsupported_function(err.message)):
                err.message = unsupported_in_words(self.name, function)
                err.args = (err.message,)
                err.details = {
                    **(err.details or {}),
                    "host": self.name,
                    "libvirt_function": function,
                }
            elif isinstance(err, Timeout):
                # libvirt itself gave up (e.g. "cannot acquire state change lock"): its
                # words name neither the host nor what was asked, which the user needs
                # to know what timed out and whether to retry.
                err.message = (
                    f"host '{self.name}': {op or op_name(fn)} timed out in libvirt: {err.message}"
                )
                err.args = (err.message,)
                err.field = "host"
                err.details = {
                    **(err.details or {}),
                    "host": self.name,
                    "operation": op or op_name(fn),
                }
            raise err from exc

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` in a daemon thread (for calls that may hang on an unreachable host)."""
        return await in_daemon_thread(fn, *args, name=f"libvirt-open-{self.name}")

    # ---- connection lifecycle ----------------------------------------------------------

    async def _supervise(self) -> None:
        assert self._lost is not None and self._resynced is not None
        backoff = Backoff(self.settings.reconnect_min_seconds, self._max_backoff())
        ever_connected = False
        wait = 0.0  # the first attempt at once
        reason = ""
        while True:
            if wait > 0:
                await asyncio.sleep(wait)
            self.next_attempt_at = None
            if self.status not in ("failed", "reconnecting", NOT_RESPONDING):
                self._set_status("connecting", reason)
            self._gen += 1
            gen = self._gen
            self._resynced.clear()
            self._lost.clear()
            self.cache.clear()
            try:
                conn = await self._open(gen)
            except Exception as exc:
                reason = _reason(exc)
                wait = self._plan(backoff.after_failure())
                self._set_status("reconnecting" if ever_connected else "failed", reason)
                continue
            self._conn = conn
            try:
                await self._resync(conn, gen)
            except Exception as exc:
                # Whatever broke (host gone mid-listing, a bug), retrying beats a dead host.
                log.warning("host %s: resync failed", self.name, exc_info=True)
                reason = f"resync failed: {_reason(exc)}"
                await self._drop(conn)
                wait = self._plan(backoff.after_failure())
                if isinstance(exc, HostTimeout):  # it answered the open, then froze
                    self._set_status(NOT_RESPONDING, reason)
                else:
                    self._set_status("reconnecting" if ever_connected else "failed", reason)
                continue
            self._resynced.set()
            self.last_answer = time.time()
            self._set_status("connected", "")
            ever_connected = True
            backoff.reset()
            heartbeat = asyncio.create_task(self._heartbeat(conn, gen), name=f"beat-{self.name}")
            try:
                await self._lost.wait()
            finally:
                heartbeat.cancel()
            reason = self._lost_reason
            frozen = self.status == NOT_RESPONDING or reason == session.KEEPALIVE_REASON
            await self._drop(conn)
            # Reconnect within the first step (a restarted libvirtd is usually back by
            # then), at a moment of this host's own: hosts dropped together do not all
            # reopen together.
            wait = self._plan(backoff.after_loss())
            # A daemon that froze (keepalive gave up, or it stopped answering before)
            # usually still accepts the socket: the reopen waits for it to thaw.
            self._set_status(NOT_RESPONDING if frozen else "reconnecting", reason)

    def _plan(self, wait: float) -> float:
        """Note when the next attempt comes (before the status change that announces it)."""
        self.next_attempt_at = time.time() + wait
        return wait

    async def _open(self, gen: int) -> libvirt.virConnect:
        """Open and attach in a daemon thread. A daemon that accepts the socket and then
        answers nothing (frozen) holds the open indefinitely: past `connect_seconds` the
        host is "not responding", saying so, and the open goes on waiting for the thaw."""
        began = time.time()
        opening = asyncio.ensure_future(self._in_thread(self._open_and_attach, gen))
        try:
            done, _ = await asyncio.wait({opening}, timeout=self.settings.connect_seconds)
            if not done:
                # The time the open began, not a duration: the reason stays true however
                # long the wait goes on (a fixed "for 15 s" was wrong after 15 s).
                since = time.strftime("%H:%M:%S UTC", time.gmtime(began))
                self._set_status(
                    NOT_RESPONDING,
                    f"libvirtd at {self.uri} has not answered the connection since {since} "
                    "(still waiting)",
                )
            return await opening
        except BaseException:
            opening.cancel()  # a stop() meanwhile: _in_thread closes what it opens late
            raise

    def _max_backoff(self) -> float:
        # A failed attempt on a local socket costs nothing, and a restarted local libvirtd
        # must be picked up within seconds however long it was away: keep local retries
        # frequent. Remote hosts back off up to the configured maximum.
        if is_remote_uri(self.uri):
            return self.settings.reconnect_max_seconds
        return min(self.settings.reconnect_max_seconds, LOCAL_MAX_BACKOFF_SECONDS)

    async def _drop(self, conn: libvirt.virConnect) -> None:
        self._conn = None
        self._gen += 1
        await self._teardown(conn)

    async def _teardown(self, conn: libvirt.virConnect) -> None:
        """Deregister and close, bounded: on a frozen daemon the daemon thread is left to
        finish (or fail) by itself, holding nothing of ours."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TEARDOWN_SECONDS):
                await self._in_thread(liveness.teardown_when_idle, conn)

    def _notify_lost(self, gen: int, reason: str) -> None:
        """Thread-safe: the connection of generation `gen` is gone."""
        loop = self._loop
        if loop is None:
            return

        def mark() -> None:
            if gen == self._gen and self._lost is not None and not self._lost.is_set():
                self._lost_reason = reason
                self._lost.set()

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(mark)

    def _open_and_attach(self, gen: int) -> libvirt.virConnect:
        conn = self.ahead.take(self.uri) if self.ahead is not None else None
        if conn is None:
            conn = session.open_uri(self.uri)
        sinks = session.Sinks(
            domain=self._dispatch_domain(gen),
            pool=self._dispatch_pool(gen),
            network=self._dispatch_network(gen),
            lost=lambda reason: self._notify_lost(gen, reason),
        )
        try:
            session.attach(conn, self.settings, sinks)
        except libvirt.libvirtError:
            session.teardown(conn)
            raise
        return conn

    async def _resync(self, conn: libvirt.virConnect, gen: int) -> None:
        """Read every domain, pool and network and make the inventory equal to it."""
        snap = await self.workers.call(
            functools.partial(
                self._guarded, conn, gen, readers.read_all, (self.name, conn), {}, "resync"
            ),
            op="resync",
            kind="lifecycle",
            deadline=self.settings.deadline_lifecycle_seconds,
        )
        if gen != self._gen:
            return
        self.inventory.replace_host(self.name, snap.domains, snap.pools, snap.networks)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, libvirt.libvirtError):
        return libvirt_message(exc)
    if isinstance(exc, KvmmError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"
