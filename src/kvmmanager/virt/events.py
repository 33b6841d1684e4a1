"""The in-process event bus: libvirt events (through the inventory) in, subscribers out.

Subscribers (SSE streams, metrics, audit, alerts) each get a bounded queue. A subscriber
that falls behind never slows the publisher or the others: when its queue is full it is
marked `overflowed`, its queue is emptied and it receives one `resync` event instead, after
which it should re-read the state it mirrors.

The bus also keeps the last REPLAY_SIZE published events (a bounded ring), so a client
that reconnects (SSE's `Last-Event-ID`) gets what it missed, through its own predicate,
or one `resync` when what it missed is no longer there.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

_seq = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened. `kind` is dotted: `domain.lifecycle`, `host.status`, ..."""

    kind: str
    host: str
    subject: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)
    seq: int = field(default_factory=lambda: next(_seq))
    # The manager instance that published it when it came from another instance over the
    # shared database (services/fleet/events.py); "" for this instance's own events.
    origin: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind,
            "host": self.host,
            "subject": self.subject,
            "data": self.data,
            "ts": self.ts,
        }


RESYNC = "resync"
REPLAY_SIZE = 1000


class Subscription:
    def __init__(self, bus: EventBus, maxsize: int, predicate: Callable[[Event], bool] | None):
        self._bus = bus
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self._predicate = predicate
        self.dropped = 0

    def _offer(self, event: Event) -> None:
        if self._predicate is not None and event.kind != RESYNC and not self._predicate(event):
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += self._queue.qsize()
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(Event(kind=RESYNC, host="", data={"reason": "overflow"}))

    async def get(self) -> Event:
        return await self._queue.get()

    def close(self) -> None:
        self._bus._subscribers.discard(self)

    async def __aiter__(self) -> AsyncIterator[Event]:
        try:
            while True:
                yield await self._queue.get()
        finally:
            self.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Fan-out to bounded per-subscriber queues. Publish is O(subscribers), never blocks."""

    def __init__(self, replay_size: int = REPLAY_SIZE) -> None:
        self._subscribers: set[Subscription] = set()
        self._listeners: list[Callable[[Event], None]] = []
        self._recent: deque[Event] = deque(maxlen=replay_size)
        self._evicted_seq = 0  # seq of the newest event the ring no longer holds

    def subscribe(
        self,
        maxsize: int = 1000,
        predicate: Callable[[Event], bool] | None = None,
        after: int | None = None,
    ) -> Subscription:
        """A new subscription; with `after` (the seq of the last event a client got), the
        events published since then are queued first, through `predicate`, or one
        `resync` when some of them have left the ring or `after` is not this process's.
        Replay and registration happen in one step on the loop: nothing in between."""
        sub = Subscription(self, maxsize, predicate)
        if after is not None:
            newest = self._recent[-1].seq if self._recent else self._evicted_seq
            if after < self._evicted_seq or after > newest:
                sub._offer(Event(kind=RESYNC, host="", data={"reason": "replay_gap"}))
            else:
                for event in self._recent:
                    if event.seq > after:
                        sub._offer(event)
        self._subscribers.add(sub)
        return sub

    def add_listener(self, fn: Callable[[Event], None]) -> None:
        """A synchronous callback run inline on publish (must be quick and never raise)."""
        self._listeners.append(fn)

    def publish(self, event: Event) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._evicted_seq = self._recent[0].seq
        self._recent.append(event)
        for fn in self._listeners:
            fn(event)
        for sub in list(self._subscribers):
            sub._offer(event)

    def resync(self, reason: str) -> None:
        """Tell every subscriber to re-read what it mirrors (events it should have had
        never reached this bus); not an event: no listener, no place in the ring."""
        for sub in list(self._subscribers):
            sub._offer(Event(kind=RESYNC, host="", data={"reason": reason}))

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
