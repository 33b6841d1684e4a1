"""libvirt's event loop: libvirtaio on one asyncio loop of its own, in a daemon thread.

libvirt accepts one event implementation per process, for the life of the process, and
keeps state in it that must never be lost: the test driver, for one, arms its event flush
timer only when its queue goes from empty to one event, so a single dropped "fire now"
leaves every later event of that driver queued for good. Binding libvirtaio to the
application's loop made that loss possible whenever that loop stopped (a server that
shuts down, each pytest test) while libvirt kept running. So libvirt's events run on a
loop that is started once and never stops; callbacks that feed the application hop onto
its loop with `call_soon_threadsafe` (see `HostConnection._schedule`).

libvirt calls the registered handle/timeout functions from whatever thread makes the API
call: opening a connection, setting keepalive or registering an event callback all run in
a host's worker thread. Stock libvirtaio would then touch the asyncio loop (add_reader,
create_task) from that foreign thread, which asyncio does not allow. Here every
loop-touching step is queued with `call_soon_threadsafe`; identifiers are handed out
synchronously because libvirt needs them at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from typing import Any

import libvirt
import libvirtaio

log = logging.getLogger(__name__)

_iden = itertools.count(1_000_000)  # apart from libvirtaio's own counter, never reused
_lock = threading.Lock()


# libvirtaio ships no type information: its class is Any to mypy.
class ThreadSafeAsyncIOImpl(libvirtaio.virEventAsyncIOImpl):  # type: ignore[misc]
    def _call(self, fn: Any, *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            # Only at interpreter exit: the event thread's loop never closes before.
            log.debug("libvirt event call dropped: loop closed")

    def _add_handle(self, fd: int, event: int, cb: Any, opaque: Any) -> int:
        iden = next(_iden)

        def add() -> None:
            callback = libvirtaio.FDCallback(
                self, cb, opaque, descriptor=self.descriptors[fd], event=event
            )
            callback.iden = iden
            self.callbacks[iden] = callback
            self.descriptors[fd].add_handle(callback)
            self._pending_inc()

        self._call(add)
        return iden

    def _update_handle(self, watch: int, event: int) -> None:
        self._call(self._update_known, super()._update_handle, watch, event)

    def _update_known(self, update: Any, iden: int, value: int) -> None:
        # libvirt updates ids it has already removed (timer -1 after keepalive stops):
        # nothing to update, and libvirtaio's KeyError would only be logged as noise.
        if iden in self.callbacks:
            update(iden, value)

    def _remove_handle(self, watch: int) -> int:
        self._call(super()._remove_handle, watch)
        return 0

    def _add_timeout(self, timeout: int, cb: Any, opaque: Any) -> int:
        iden = next(_iden)

        def add() -> None:
            callback = libvirtaio.TimeoutCallback(self, cb, opaque)
            callback.iden = iden
            self.callbacks[iden] = callback
            callback.update(timeout=timeout)
            self._pending_inc()

        self._call(add)
        return iden

    def _update_timeout(self, timer: int, timeout: int) -> None:
        self._call(self._update_known, super()._update_timeout, timer, timeout)

    def _remove_timeout(self, timer: int) -> int:
        self._call(super()._remove_timeout, timer)
        return 0


_impl: ThreadSafeAsyncIOImpl | None = None


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """libvirt prints every error on stderr by default; we raise and log them ourselves."""


def ensure_event_loop() -> ThreadSafeAsyncIOImpl:
    """Start libvirt's event loop thread and register it with libvirt (once per process)."""
    global _impl
    with _lock:
        if _impl is None:
            libvirt.registerErrorHandler(_ignore_libvirt_error, None)
            loop = asyncio.new_event_loop()
            started = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            threading.Thread(target=run, name="libvirt-events", daemon=True).start()
            started.wait()
            _impl = ThreadSafeAsyncIOImpl(loop=loop).register()
            libvirtaio._current_impl = _impl
    return _impl
