"""GET /api/events: the event bus as a Server-Sent Events stream.

Each client gets its own bounded queue on the bus; a client that falls behind receives one
`resync` event (its queue was emptied) and should re-read what it mirrors. Comment pings
keep proxies from closing an idle stream. Each client sees only events about what it may
read through the REST API (services/ownership.event_visible): another user's job
progress and results never reach it.

A client that reconnects with `Last-Event-ID` (browsers' EventSource send it by
themselves) first gets the events it missed from the bus's bounded ring, through the same
per-user filter, or one `resync` when they are no longer there.

When the server stops (SIGTERM), each stream ends by itself: its generator returns on
sse-starlette's shutdown event, so the response is completed (the client sees the stream
end and reconnects, through a balancer to another instance) instead of being cancelled
half-way, which uvicorn logged as "ASGI callable returned without completing response"
(issue 16 M3; tests/reliability/test_serve_stop.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse

from kvmmanager.api.deps import CurrentUser, ManagerDep
from kvmmanager.api.schemas.common import ERROR_RESPONSES
from kvmmanager.services.users import ownership
from kvmmanager.services.users.service import Principal
from kvmmanager.virt.events import RESYNC, Event, Subscription

router = APIRouter(prefix="/api", tags=["events"], responses=ERROR_RESPONSES)

QUEUE_SIZE = 1000
PING_SECONDS = 15
# How long a stopping server lets each stream end by itself before cancelling it; the
# generator returns at once on the shutdown event, so this is only a bound.
SHUTDOWN_GRACE_SECONDS = 5.0


async def _next_or_stop(sub: Subscription, stop: asyncio.Future[Any]) -> Event | None:
    """The subscription's next event, or None once `stop` (the server's shutdown) is done."""
    get = asyncio.ensure_future(sub.get())
    await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
    if get.done():
        return get.result()
    get.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await get
    return None


def _matcher(kinds: list[str], hosts: list[str], user: Principal) -> Any:
    def match(event: Event) -> bool:
        if not ownership.event_visible(user, event):
            return False
        if hosts and event.host not in hosts:
            return False
        return not kinds or any(
            event.kind == k or (k.endswith(".") and event.kind.startswith(k)) for k in kinds
        )

    return match


@router.get("/events", name="events.stream")
async def stream_events(
    request: Request,
    *,
    kind: list[str] = Query(
        default_factory=list,
        max_length=50,
        description="Kinds to receive; `domain.` matches every domain event. Default: all.",
    ),
    host: list[str] = Query(default_factory=list, max_length=50),
    last_event_id: str | None = Header(
        None,
        max_length=20,
        description="The `id` of the last event received: the events since then are "
        "replayed first (or one `resync` when they are gone).",
    ),
    manager: ManagerDep,
    user: CurrentUser,
) -> EventSourceResponse:
    """Every event the caller may read (the REST reads' rule: another user's job events
    never reach them), optionally only some kinds and hosts."""
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else None
    sub = manager.bus.subscribe(
        maxsize=QUEUE_SIZE, predicate=_matcher(kind, host, user), after=after
    )

    shutdown = anyio.Event()

    async def events() -> AsyncIterator[dict[str, Any]]:
        stop = asyncio.ensure_future(shutdown.wait())
        try:
            with sub:
                while True:
                    event = await _next_or_stop(sub, stop)
                    if event is None:
                        return  # the server stops: the response ends completed
                    message = {
                        "event": event.kind,
                        "data": json.dumps(event.to_dict(), default=str),
                    }
                    if event.kind != RESYNC:
                        # A resync is no published event: without an id the client's
                        # Last-Event-ID stays the last real one it got.
                        message["id"] = str(event.seq)
                    yield message
                    if event.kind == RESYNC and await request.is_disconnected():
                        return
        finally:
            stop.cancel()

    return EventSourceResponse(
        events(),
        ping=PING_SECONDS,
        send_timeout=30,
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
    )
