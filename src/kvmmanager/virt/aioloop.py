"""libvirt's event loop on asyncio (libvirtaio), made safe for calls from worker threads.

libvirt calls the registered handle/timeout functions from whatever thread makes the API
call: opening a connection, setting keepalive or registering an event callback all run in
a host's worker thread (so a slow host never blocks the loop). Stock libvirtaio would then
touch the asyncio loop (add_reader, create_task) from that foreign thread, which asyncio
does not allow and which may leave a timer unscheduled until something else wakes the
loop. Here every loop-touching step is queued with `call_soon_threadsafe`; identifiers are
handed out synchronously because libvirt needs them at once.

libvirt accepts one event implementation per process. When a process runs several loops
one after the other (each pytest test gets its own), `ensure_event_loop()` moves the
registered implementation to the loop now running instead of registering a second one.
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


class ThreadSafeAsyncIOImpl(libvirtaio.virEventAsyncIOImpl):
    def _call(self, fn: Any, *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            # The loop is closed (process or test teardown): nothing can fire any more.
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
        self._call(super()._update_handle, watch, event)

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
        self._call(super()._update_timeout, timer, timeout)

    def _remove_timeout(self, timer: int) -> int:
        self._call(super()._remove_timeout, timer)
        return 0

    def rebind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Move every watched fd and running timer to `loop` (called on `loop`)."""
        self.loop = loop
        for descriptor in list(self.descriptors.values()):
            descriptor.update()
        for callback in list(self.callbacks.values()):
            if isinstance(callback, libvirtaio.TimeoutCallback) and callback.timeout >= 0:
                callback._task = None
                callback.update(callback.timeout)


_impl: ThreadSafeAsyncIOImpl | None = None


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """libvirt prints every error on stderr by default; we raise and log them ourselves."""


def ensure_event_loop() -> ThreadSafeAsyncIOImpl:
    """Register libvirt's event implementation on the running loop (once per process)."""
    global _impl
    loop = asyncio.get_running_loop()
    with _lock:
        if _impl is None:
            libvirt.registerErrorHandler(_ignore_libvirt_error, None)
            _impl = ThreadSafeAsyncIOImpl(loop=loop).register()
            libvirtaio._current_impl = _impl
        elif _impl.loop is not loop:
            if _impl.loop.is_running():
                raise RuntimeError("libvirt events already run on another live event loop")
            _impl.rebind(loop)
    return _impl
