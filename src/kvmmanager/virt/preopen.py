"""Host connections opened ahead, while the rest of the server is still being built.

`kvm-manager serve` knows its stored hosts right after it migrated the database, seconds
before the web app is built and the Manager starts them (imports of ~290 routes and
their models, Python under the GIL). Opening a libvirt connection is mostly C without the
GIL: libvirtd's handshake for a remote host, or the test driver parsing its whole file in
our process (~2.5 s of CPU at 5,000 domains). Started here, the opens overlap the app's
build instead of following it (issue 19 item 4, cold start).

A host's first open takes the connection opened ahead for its URI (waiting for it if it
is still opening, or raising what the open raised); every later open is the host's own.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import libvirt

from kvmmanager.virt import session
from kvmmanager.virt.aioloop import ensure_event_loop

log = logging.getLogger(__name__)


@dataclass
class _Opening:
    done: threading.Event = field(default_factory=threading.Event)
    conn: libvirt.virConnect | None = None
    error: BaseException | None = None
    finished: bool = False  # conn/error recorded (under the lock)
    abandoned: bool = False  # nobody will take it: close it when the open ends


class AheadOpens:
    """Connections being opened for URIs before their hosts start (thread-safe)."""

    def __init__(self, opener: Callable[[str], libvirt.virConnect] = session.open_uri) -> None:
        self._opener = opener
        self._lock = threading.Lock()
        self._opening: dict[str, _Opening] = {}

    def start(self, uris: Iterable[str]) -> None:
        """Begin opening each URI in a daemon thread of its own (an unreachable host may
        hold its open for minutes; the process must still be able to exit)."""
        # libvirt's event implementation is registered before any open, as the hosts'
        # own opens do: keepalive and event callbacks need it on the connection.
        ensure_event_loop()
        for uri in uris:
            with self._lock:
                if uri in self._opening:
                    continue
                opening = self._opening[uri] = _Opening()
            threading.Thread(
                target=self._open, args=(uri, opening), name="libvirt-open-ahead", daemon=True
            ).start()

    def _open(self, uri: str, opening: _Opening) -> None:
        try:
            conn: libvirt.virConnect | None = self._opener(uri)
            error: BaseException | None = None
        except Exception as exc:
            conn, error = None, exc
        with self._lock:
            opening.conn, opening.error, opening.finished = conn, error, True
            orphan = opening.abandoned
        opening.done.set()
        if orphan and conn is not None:
            session.teardown(conn)

    def take(self, uri: str) -> libvirt.virConnect | None:
        """The connection opened ahead for `uri`, once (blocking until its open ends; run
        it where the host's own open would run). None when none was started for it.
        Raises what that open raised."""
        with self._lock:
            opening = self._opening.pop(uri, None)
        if opening is None:
            return None
        opening.done.wait()
        if opening.error is not None:
            raise opening.error
        return opening.conn

    def discard_except(self, uris: Iterable[str]) -> None:
        """Close the connections of URIs no host will take (a host removed or refused
        between the ahead-open and the Manager's start), now or when their open ends."""
        keep = set(uris)
        opened: list[libvirt.virConnect] = []
        with self._lock:
            for uri in [u for u in self._opening if u not in keep]:
                opening = self._opening.pop(uri)
                # Decided under the lock: an open still under way closes its own.
                opening.abandoned = True
                if opening.finished and opening.conn is not None:
                    opened.append(opening.conn)
        for conn in opened:
            with contextlib.suppress(libvirt.libvirtError):
                session.teardown(conn)
