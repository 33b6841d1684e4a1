"""Follows GET /api/events (SSE) in a thread so tests wait on events, never on sleeps.

Every event is kept in arrival order; `mark()` returns a cursor and `wait(pred, after=...)`
blocks until an event at or after that cursor matches (or the deadline passes).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

Event = dict[str, Any]


class EventTimeout(AssertionError):
    pass


class EventWatcher:
    def __init__(self, base_url: str, token: str) -> None:
        self._url = base_url + "/api/events"
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        self._events: list[Event] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kvmm-e2e-events", daemon=True)

    def start(self, timeout: float = 30) -> EventWatcher:
        self._thread.start()
        if not self._connected.wait(timeout):
            raise RuntimeError("GET /api/events did not answer")
        return self

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        # Reconnects after a dropped stream (a manager restart in a scenario).
        while not self._stop.is_set():
            try:
                with httpx.stream(
                    "GET", self._url, headers=self._headers, timeout=httpx.Timeout(None, connect=10)
                ) as resp:
                    resp.raise_for_status()
                    self._connected.set()
                    self._read(resp)
            except httpx.HTTPError:
                if self._stop.wait(0.5):
                    return

    def _read(self, resp: httpx.Response) -> None:
        kind, data = None, []
        for line in resp.iter_lines():
            if self._stop.is_set():
                return
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                try:
                    event = json.loads("\n".join(data))
                except ValueError:
                    event = {"kind": kind, "raw": "\n".join(data)}
                event.setdefault("kind", kind)
                with self._cond:
                    self._events.append(event)
                    self._cond.notify_all()
                kind, data = None, []

    def mark(self) -> int:
        with self._cond:
            return len(self._events)

    def events(self, after: int = 0) -> list[Event]:
        with self._cond:
            return list(self._events[after:])

    def wait(
        self, predicate: Callable[[Event], bool], timeout: float = 120, after: int = 0
    ) -> Event:
        deadline = time.monotonic() + timeout
        seen = after
        with self._cond:
            while True:
                for event in self._events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self._events)
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = [(e.get("kind"), e.get("data")) for e in self._events[after:]][-15:]
                    raise EventTimeout(f"no matching event within {timeout} s; last: {tail}")
                self._cond.wait(left)


def agent_event(name: str, status: str, channel: str = "kvmm") -> Callable[[Event], bool]:
    """Matches the domain.agent event of VM `name` reaching `status` on `channel`."""

    def match(e: Event) -> bool:
        d = e.get("data") or {}
        return (
            e.get("kind") == "domain.agent"
            and d.get("name") == name
            and d.get("channel") == channel
            and d.get("status") == status
        )

    return match


def lifecycle_event(name: str, *states: str) -> Callable[[Event], bool]:
    """Matches a domain event of VM `name` whose state is one of `states`."""

    def match(e: Event) -> bool:
        d = e.get("data") or {}
        return (
            str(e.get("kind", "")).startswith("domain.")
            and d.get("name") == name
            and d.get("state") in states
        )

    return match
