"""Blocking libvirt calls that may hang for minutes (opening a connection to an
unreachable or frozen host, closing one) run in daemon threads of their own: they must
neither take a host's worker away nor keep the process from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from kvmmanager.virt import session

T = TypeVar("T")


async def in_daemon_thread(fn: Callable[..., T], *args: Any, name: str) -> T:
    """Run `fn(*args)` in a daemon thread named `name` and await its outcome.

    A connection the thread opens for nobody (the caller was cancelled: stop() during
    the open) is closed by whichever side comes second, decided under a lock: never
    through the loop, which may have stopped running for good by then and would
    leave it open, with its event callbacks, for the life of the process."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()
    lock = threading.Lock()
    outcome: list[tuple[bool, Any]] = []  # what the thread produced
    abandoned: list[bool] = []  # the caller gave up

    def settle() -> None:
        if not fut.done():
            ok, value = outcome[0]
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def body() -> None:
        try:
            result: Any = fn(*args)
            ok = True
        except BaseException as exc:
            result, ok = exc, False
        with lock:
            outcome.append((ok, result))
            orphan = bool(abandoned)
        if orphan:
            _close_orphan(ok, result)
            return
        with contextlib.suppress(RuntimeError):  # loop closed: the caller is gone too
            loop.call_soon_threadsafe(settle)

    threading.Thread(target=body, name=name, daemon=True).start()
    try:
        return await fut
    except asyncio.CancelledError:
        with lock:
            abandoned.append(True)
            produced = list(outcome)
        if produced:
            threading.Thread(target=_close_orphan, args=produced[0], daemon=True).start()
        raise


def _close_orphan(ok: bool, value: Any) -> None:
    """A connection opened for a caller that has gone: deregister and close it."""
    if ok and isinstance(value, libvirt.virConnect):
        session.teardown(value)
