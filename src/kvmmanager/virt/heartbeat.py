"""Telling whether a host's libvirtd still answers: the heartbeat of a connected host.

One cheap call (getLibVersion) every `heartbeat_seconds`, and at once after a call passes
its deadline, marks the host "not responding" when it stays unanswered for
`not_responding_seconds`, and "connected" again when the answer comes. Calls are refused
up front meanwhile (calls still queued for a worker too: virt/calls.py). The question
runs in a daemon thread of its own, never in one of the host's workers, which may all be
stuck on the frozen daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import libvirt

from kvmmanager.core.config import LibvirtSettings
from kvmmanager.virt import liveness, session
from kvmmanager.virt.calls import Call

log = logging.getLogger(__name__)

NOT_RESPONDING = "not responding"


class Heartbeat:
    """Mixin of HostConnection: the attributes below are HostConnection's."""

    name: str
    settings: LibvirtSettings
    status: str
    last_answer: float | None
    _gen: int
    _wake_heartbeat: asyncio.Event | None
    _in_thread: Callable[..., Awaitable[Any]]
    _set_status: Callable[..., None]

    def _call_overdue(self, call: Call) -> None:
        """A call passed its deadline (on the loop): check the daemon at once."""
        log.warning("host %s: %s passed its %s deadline", self.name, call.op, call.kind)
        if self._wake_heartbeat is not None:
            self._wake_heartbeat.set()

    async def _heartbeat(self, conn: libvirt.virConnect, gen: int) -> None:
        """Ask the daemon one cheap question every `heartbeat_seconds` (or at once when a
        call went overdue). Unanswered within `not_responding_seconds`: not responding,
        until the answer comes (then connected again) or keepalive closes the connection.
        The question runs in a daemon thread, never in a worker."""
        wake = self._wake_heartbeat = asyncio.Event()
        while gen == self._gen:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.heartbeat_seconds):
                    await wake.wait()
            wake.clear()
            if gen != self._gen:
                return
            started = time.monotonic()
            ping = asyncio.ensure_future(self._in_thread(liveness.ping, conn))
            try:
                async with asyncio.timeout(self.settings.not_responding_seconds):
                    await asyncio.shield(ping)
                self.last_answer = time.time()
                continue
            except TimeoutError:
                pass
            except Exception as exc:
                # A dead connection: the close callback reports it to the supervisor.
                log.debug("host %s: heartbeat failed: %s", self.name, exc)
                continue
            if gen != self._gen:
                return
            # The reason names the last answer (not "for N s", which would turn false as
            # the freeze goes on without anyone rewriting it).
            self._set_status(
                NOT_RESPONDING, f"libvirtd has not answered since {_clock(self.last_answer)}"
            )
            try:
                await self._await_thaw(conn, ping)
                self.last_answer = time.time()
            except Exception:
                # An error is an answer only from a live connection; a dead one (keepalive
                # gave up) is the supervisor's to handle.
                if not session.alive(conn):
                    return
            if gen == self._gen and self.status == NOT_RESPONDING:
                log.info(
                    "host %s answered again after %.1f s", self.name, time.monotonic() - started
                )
                self._set_status("connected", "")

    async def _await_thaw(self, conn: libvirt.virConnect, ping: asyncio.Future[Any]) -> Any:
        """Wait for the unanswered ping. libvirt 9.0's client crashes (SIGSEGV, measured)
        when keepalive closes a connection with two or more calls waiting and the daemon
        answers later: only one waiter gets the error, the others are left on freed state.
        So keepalive is paused while more calls than the ping wait on this connection
        (they complete when the daemon thaws; new calls are refused meanwhile), and
        resumed once only the ping waits, to end a connection that never answers again."""
        await self._in_thread(liveness.keepalive_off, conn)
        paused = True
        try:
            while not ping.done():
                await asyncio.wait({ping}, timeout=0.2)
                if paused and liveness.uses.count(conn) <= 1:
                    await self._in_thread(liveness.keepalive_on, conn, self.settings)
                    paused = False
            return ping.result()
        finally:
            if paused:
                await self._in_thread(liveness.keepalive_on, conn, self.settings)


def _clock(when: float | None) -> str:
    if when is None:
        return "the connection opened"
    return time.strftime("%H:%M:%S UTC", time.gmtime(when))
