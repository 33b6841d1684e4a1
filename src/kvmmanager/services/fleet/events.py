"""Events of one instance on every instance's stream (issue 16 item 3), through
PostgreSQL's LISTEN/NOTIFY.

Each instance gets libvirt's events itself (its own connection per host), but a job runs
on the instance that started it, and alerts and schedule runs on the singleton-lease
holder: their events (`job.*`, `alert.*`, `schedule.run`) are sent as a NOTIFY on the
channel `kvmm_events`, and every other instance LISTENing there publishes them on its own
bus, so a browser on any instance follows any job. Changes of shared configuration that
an instance keeps in memory travel the same way (`hosts.changed`, `alert_rules.changed`):
the receiving instance re-reads them from the database. SQLite has no second instance to
tell.

Two psycopg connections of their own (autocommit), each in a thread: one sends (the bus
listener only queues, never waits for the database), one listens and hands events to the
event loop. Both reconnect with backoff after a database restart; what was sent while an
instance was not listening is not replayed (the job and alert rows hold the state): once
it listens again, its bus tells every subscriber (each SSE stream) to `resync`, so a
client re-reads from the REST API instead of silently missing those events.
A NOTIFY payload is at most 8000 bytes: an event too large is sent without its data's
long values (a job's result, for one), which a client reads from the REST API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading

import psycopg
from sqlalchemy.engine import URL

from kvmmanager.virt.events import Event, EventBus

log = logging.getLogger(__name__)

CHANNEL = "kvmm_events"
# `instance.*`: an instance started, stopped, took or lost the lease, or beat (the
# dashboard's instance list on every instance follows them).
RELAYED_PREFIXES = ("job.", "alert.", "instance.")
# `hosts.changed` and `alert_rules.changed`: the other instances re-read the host table
# (services/hosts/service.py) or the alert rules (services/alerts/service.py) from the database.
RELAYED_KINDS = frozenset({"schedule.run", "hosts.changed", "alert_rules.changed"})
PAYLOAD_MAX = 7900  # PostgreSQL refuses a payload of 8000 bytes or more
SHORT_VALUE = 200  # what an oversized event keeps of its data: values this short
RETRY_MAX = 10.0
GAP_REASON = "fleet_events_gap"  # the `resync` a stream gets after LISTEN was lost


def relayed(kind: str) -> bool:
    return kind in RELAYED_KINDS or kind.startswith(RELAYED_PREFIXES)


def encode(origin: str, event: Event) -> str:
    body = {
        "origin": origin,
        "kind": event.kind,
        "host": event.host,
        "subject": event.subject,
        "ts": event.ts,
        "data": event.data,
    }
    text = json.dumps(body, default=str, separators=(",", ":"))
    if len(text.encode()) <= PAYLOAD_MAX:
        return text
    short = {k: v for k, v in event.data.items() if len(json.dumps(v, default=str)) <= SHORT_VALUE}
    body["data"] = {**short, "truncated": True}
    text = json.dumps(body, default=str, separators=(",", ":"))
    if len(text.encode()) <= PAYLOAD_MAX:
        return text
    body["data"] = {"truncated": True}
    return json.dumps(body, default=str, separators=(",", ":"))[:PAYLOAD_MAX]


def decode(payload: str) -> Event | None:
    """The event another instance sent, its `origin` set to that instance."""
    try:
        body = json.loads(payload)
        return Event(
            kind=str(body["kind"]),
            host=str(body["host"]),
            subject=str(body["subject"]),
            data=dict(body["data"]),
            ts=float(body["ts"]),
            origin=str(body["origin"]),
        )
    except (ValueError, KeyError, TypeError):
        log.warning("ignored an undecodable fleet event (%d bytes)", len(payload))
        return None


class FleetEvents:
    """The relay of one instance; `start()` on the event loop, `aclose()` at stop."""

    def __init__(self, database_url: URL, bus: EventBus, origin: str) -> None:
        """`database_url`: the engine's (the relay connects with psycopg itself);
        `origin`: this instance's id, stamped on what it sends."""
        self._bus = bus
        self.origin = origin
        url = database_url.set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._outbox: queue.Queue[str | None] = queue.Queue(maxsize=10_000)
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self.listening = threading.Event()  # LISTEN is in effect (tests wait for it)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._bus.add_listener(self._on_event)
        loops = ((self._send_loop, "kvmm-fleet-notify"), (self._listen_loop, "kvmm-fleet-listen"))
        for target, name in loops:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        # Bounded: a database that does not answer must not hold up the start.
        await asyncio.to_thread(self.listening.wait, 10.0)

    # ---- sending -------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        # Another instance's event (origin set) is not sent back out.
        if event.origin or not relayed(event.kind) or self._stop.is_set():
            return
        try:
            self._outbox.put_nowait(encode(self.origin, event))
        except queue.Full:
            log.warning("fleet event queue full: %s not sent to other instances", event.kind)

    def _send_loop(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    delay = 0.5
                    # What was queued before the stop is still sent (the stop's own
                    # `instance.changed` is): the None put by aclose() ends the loop.
                    while True:
                        try:
                            payload = self._outbox.get(timeout=0.5)
                        except queue.Empty:
                            if self._stop.is_set():
                                return
                            continue
                        if payload is None:
                            return
                        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
            except psycopg.Error as e:
                log.warning("fleet events: sending failed (%s); retrying in %.1f s", e, delay)
                self._stop.wait(delay)
                delay = min(RETRY_MAX, delay * 2)

    # ---- receiving -----------------------------------------------------------------

    def _listen_loop(self) -> None:
        delay = 0.5
        gap = False  # LISTEN was lost: what was sent meanwhile never arrived
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    if gap and self._loop is not None:
                        self._loop.call_soon_threadsafe(self._bus.resync, GAP_REASON)
                    gap = False
                    delay = 0.5
                    while not self._stop.is_set():
                        # A timeout so a stop is noticed without a notification.
                        for n in conn.notifies(timeout=0.5):
                            self._received(n.payload)
            except psycopg.Error as e:
                self.listening.clear()
                gap = True
                log.warning("fleet events: listening failed (%s); retrying in %.1f s", e, delay)
                self._stop.wait(delay)
                delay = min(RETRY_MAX, delay * 2)

    def _received(self, payload: str) -> None:
        event = decode(payload)
        if event is None or self._loop is None:
            return
        if event.origin == self.origin:
            return  # our own, already on our bus
        self._loop.call_soon_threadsafe(self._bus.publish, event)

    async def aclose(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._outbox.put_nowait(None)  # wakes the sender at once
        for t in self._threads:
            await asyncio.to_thread(t.join, 5.0)
        self._threads.clear()
