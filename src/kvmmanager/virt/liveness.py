"""Keeping a virConnect safe to use while its daemon does not answer.

libvirt 9.0's client crashes (SIGSEGV) when keepalive closes a connection on which two or
more calls wait and the daemon answers later (measured here with a SIGSTOPped libvirtd:
one waiter gets the error, the others are left on freed state), and closing a virConnect
while another thread is inside a call on it is the same hazard. So calls in flight are
counted per connection, a connection is closed only once idle, and keepalive is paused
while calls other than the heartbeat wait (HostConnection._await_thaw).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import libvirt

from kvmmanager.core.config import LibvirtSettings
from kvmmanager.virt import session


class ConnectionUses:
    """Calls in flight per virConnect, so a connection is closed only once its last call
    has returned (a call still inside libvirt on a closed virConnect works on freed state)
    and keepalive is only resumed when no more than one call waits."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count: dict[int, int] = {}

    @contextlib.contextmanager
    def using(self, conn: libvirt.virConnect) -> Any:
        key = id(conn)
        with self._cond:
            self._count[key] = self._count.get(key, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                self._count[key] -= 1
                if not self._count[key]:
                    del self._count[key]
                    self._cond.notify_all()

    def count(self, conn: libvirt.virConnect) -> int:
        with self._cond:
            return self._count.get(id(conn), 0)

    def wait_idle(self, conn: libvirt.virConnect) -> None:
        with self._cond:
            self._cond.wait_for(lambda: id(conn) not in self._count)


uses = ConnectionUses()


def ping(conn: libvirt.virConnect) -> int:
    with uses.using(conn):
        version: int = conn.getLibVersion()
        return version


def teardown_when_idle(conn: libvirt.virConnect) -> None:
    """In a daemon thread: a call still waiting on a frozen daemon keeps the connection
    open until it returns (keepalive has usually ended it by then)."""
    uses.wait_idle(conn)
    session.teardown(conn)


def keepalive_off(conn: libvirt.virConnect) -> None:
    # Client-side only (no round trip): answers at once even from a frozen daemon.
    with contextlib.suppress(libvirt.libvirtError):
        conn.setKeepAlive(0, 0)


def keepalive_on(conn: libvirt.virConnect, settings: LibvirtSettings) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        conn.setKeepAlive(settings.keepalive_interval, settings.keepalive_count)
