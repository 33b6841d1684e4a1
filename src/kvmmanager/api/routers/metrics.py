"""VM metrics: current values, history, a live stream, and the Prometheus endpoint.

    GET /api/metrics/collectors                         collector state of every host
    GET /api/hosts/{host}/metrics                       latest rates of every VM of a host
    GET /api/hosts/{host}/vms/{vm}/metrics              latest of one VM (+ guest figures)
    GET /api/hosts/{host}/vms/{vm}/metrics/history      columnar series for a time range
                                                        (?range=1h|6h|24h|7d|30d, ?last=,
                                                        or ?since=&until=)
    GET /api/hosts/{host}/vms/{vm}/metrics/stream       SSE: one `sample` per collection
    GET /metrics                                        Prometheus text exposition

Every route is for viewers and up. `/metrics` is marked public because it checks its
caller itself: a bearer token equal to `metrics.prometheus_token` (so a scraper needs no
user account), or any user's session or API token.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sse_starlette import EventSourceResponse

from kvmmanager.api.deps import ManagerDep, current_user, public
from kvmmanager.api.schemas.common import ERROR_RESPONSES
from kvmmanager.api.schemas.metrics import CollectorOut, HistoryOut, HostMetricsOut, VmMetricsOut
from kvmmanager.core import security
from kvmmanager.core.errors import InvalidInput, KvmmError
from kvmmanager.services.metrics.prom import exposition
from kvmmanager.services.metrics.service import WINDOWS

router = APIRouter(tags=["metrics"], responses=ERROR_RESPONSES)
VM = "/api/hosts/{host}/vms/{vm}/metrics"
PING_SECONDS = 15
# How long a stream waits for the next collection before checking its client again.
WAIT_SECONDS = 5.0


@router.get("/api/metrics/collectors", name="metrics.collectors", response_model=list[CollectorOut])
async def collectors(manager: ManagerDep) -> list[dict[str, Any]]:
    return [manager.metrics.host(h).stats() for h in manager.metrics.hosts()]


@router.get("/api/hosts/{host}/metrics", name="metrics.host", response_model=HostMetricsOut)
async def host_metrics(host: str, manager: ManagerDep) -> dict[str, Any]:
    """The latest collection of every VM of the host."""
    return manager.metrics.current(host)


@router.get(VM, name="metrics.vm", response_model=VmMetricsOut)
async def vm_metrics(host: str, vm: str, manager: ManagerDep) -> dict[str, Any]:
    return manager.metrics.vm_current(host, vm)


@router.get(VM + "/history", name="metrics.history", response_model=HistoryOut)
async def vm_history(
    host: str,
    vm: str,
    *,
    window: str | None = Query(
        None,
        alias="range",
        description=f"a named range: {' | '.join(WINDOWS)} (instead of since/until or last)",
    ),
    since: float | None = Query(None, description="Unix seconds; default: `until` - 1 h"),
    until: float | None = Query(None, description="Unix seconds; default: now"),
    last: float | None = Query(
        None, gt=0, description="the last N seconds (instead of since/until)"
    ),
    manager: ManagerDep,
) -> dict[str, Any]:
    """Up to 1 h back at full resolution (the collection interval), up to 24 h as
    5-minute means, up to `metrics.retention_days` (default 30) as hourly means; kept
    across restarts when persistence is on. The `step` of the answer says which."""
    if last is not None:
        if since is not None or until is not None or window is not None:
            raise InvalidInput(
                "give one of 'range', 'last' or 'since'/'until', not several", field="last"
            )
        if last > manager.metrics.retention_seconds:
            raise InvalidInput(
                f"'last' may be at most {manager.metrics.retention_seconds:g} seconds "
                "(metrics.retention_days)",
                field="last",
            )
        until = time.time()
        since = until - last
    return await manager.metrics.ahistory(host, vm, since, until, window=window)


@router.get(VM + "/stream", name="metrics.stream")
async def vm_stream(
    request: Request, host: str, vm: str, manager: ManagerDep
) -> EventSourceResponse:
    """Server-Sent Events: a `sample` event (the same body as GET .../metrics) after
    every collection of the host, for live graphs."""
    manager.metrics.vm_current(host, vm)  # 404 now, not inside the stream

    async def events() -> AsyncIterator[dict[str, Any]]:
        seq = 0
        while True:
            new = await manager.metrics.wait_cycle(host, seq, WAIT_SECONDS)
            if await request.is_disconnected():
                return
            if new == seq:
                continue
            seq = new
            try:
                body = manager.metrics.vm_current(host, vm)
            except KvmmError as e:
                # The VM (or host) went away: say so once and end the stream.
                yield {"event": "gone", "data": json.dumps({"message": e.message})}
                return
            yield {"event": "sample", "id": str(seq), "data": json.dumps(body)}
            # Let a slow client fall behind by whole samples, never queue them up.
            await asyncio.sleep(0)

    return EventSourceResponse(events(), ping=PING_SECONDS, send_timeout=30)


@router.get(
    "/metrics",
    name="metrics.prometheus",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "text exposition"}},
)
@public
async def prometheus(request: Request, manager: ManagerDep) -> Response:
    """Prometheus scrape: `Authorization: Bearer <metrics.prometheus_token>` or any user."""
    token = manager.settings.metrics.prometheus_token
    scheme, _, secret = (request.headers.get("authorization") or "").partition(" ")
    if not (
        token and scheme.lower() == "bearer" and security.constant_time_equal(secret.strip(), token)
    ):
        try:
            current_user(request)
        except KvmmError as e:
            # Answered here: outside /api/ the web UI would turn a raised error into a
            # redirect to its login page, which a scraper must never receive.
            return JSONResponse(
                {"error": e.to_dict()},
                status_code=e.status,
                headers={"WWW-Authenticate": "Bearer"},
            )
    body = await asyncio.to_thread(exposition, manager.metrics, manager.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
