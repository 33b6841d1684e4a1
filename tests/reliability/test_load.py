"""Load on the real server (a child process, test driver): N concurrent API clients with
mixed reads and writes plus SSE listeners — 0 errors, p50/p99 recorded (never
asserted); login brute force is rate-limited; slow clients do not starve the others.

CI default: 50 clients for 10 s with 10 SSE listeners. KVMM_LOAD_CLIENTS,
KVMM_LOAD_SECONDS and KVMM_LOAD_SSE raise it (the issue's full run: 200 / 60 / 50).
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from tests.reliability.conftest import ServerProcess, summary_ms

CLIENTS = int(os.environ.get("KVMM_LOAD_CLIENTS", "50"))
SECONDS = float(os.environ.get("KVMM_LOAD_SECONDS", "10"))
SSE_LISTENERS = int(os.environ.get("KVMM_LOAD_SSE", "10"))
READS = ["/api/vms", "/api/hosts", "/api/jobs", "/api/hosts/local/vms/test", "/api/auth/me"]


async def _client(
    base: str, token: str, n: int, until: float, lat: dict[str, list[float]], errors: Counter
) -> None:
    rnd = random.Random(n)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as c:
        i = 0
        while time.monotonic() < until:
            i += 1
            t0 = time.perf_counter()
            if rnd.random() < 0.2:
                kind = "write"
                r = await c.patch(
                    "/api/hosts/local/vms/test", json={"description": f"kvmm-t-sec load {n} {i}"}
                )
            else:
                kind = "read"
                r = await c.get(rnd.choice(READS))
            lat[kind].append(time.perf_counter() - t0)
            if r.status_code >= 400:
                errors[f"{kind} {r.status_code} {r.text[:120]}"] += 1


async def _listener(base: str, token: str, until: float, got: list[int]) -> None:
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    n = 0
    async with (
        httpx.AsyncClient(base_url=base, headers=headers, timeout=None) as c,
        c.stream("GET", "/api/events") as r,
    ):
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                n += 1
            if time.monotonic() > until:
                break
    got.append(n)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_concurrent_clients_and_sse_listeners(
    server_process: Callable[..., ServerProcess], figures: dict[str, Any]
) -> None:
    srv = await asyncio.to_thread(server_process)
    token = await asyncio.to_thread(lambda: srv.api().headers["Authorization"].split()[1])
    until = time.monotonic() + SECONDS
    lat: dict[str, list[float]] = {"read": [], "write": []}
    errors: Counter[str] = Counter()
    events: list[int] = []
    listeners = [
        asyncio.create_task(_listener(srv.url, token, until + 1, events))
        for _ in range(SSE_LISTENERS)
    ]
    await asyncio.gather(*(_client(srv.url, token, n, until, lat, errors) for n in range(CLIENTS)))
    await asyncio.wait_for(asyncio.gather(*listeners), 120)
    total = len(lat["read"]) + len(lat["write"])
    figures.update(
        clients=CLIENTS,
        seconds=SECONDS,
        sse_listeners=SSE_LISTENERS,
        requests=total,
        requests_per_s=round(total / SECONDS, 1),
        read=summary_ms(lat["read"]),
        write=summary_ms(lat["write"]),
        sse_events_min=min(events),
    )
    assert not errors, errors.most_common(5)
    assert total >= CLIENTS  # every client got answers
    # Every write published a domain event: every listener saw the stream move.
    assert len(events) == SSE_LISTENERS and min(events) > 0


@pytest.mark.slow
def test_login_brute_force_is_rate_limited(
    server_process: Callable[..., ServerProcess], figures: dict[str, Any]
) -> None:
    srv = server_process()
    codes: Counter[int] = Counter()
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for i in range(60):
            r = c.post("/api/auth/login", json={"username": "admin", "password": f"guess-{i}"})
            codes[r.status_code] += 1
            if r.status_code == 429:
                assert r.json()["error"]["code"] == "rate_limited"
                break
    figures["attempts_before_429"] = sum(codes.values())
    assert codes[429] == 1, codes
    assert codes[401] >= 3, codes  # real attempts were allowed before the limit


@pytest.mark.slow
def test_slow_clients_do_not_starve_others(
    server_process: Callable[..., ServerProcess], figures: dict[str, Any]
) -> None:
    """Slowloris: many connections that send half a request and stall. The server's
    event loop keeps serving complete requests."""
    srv = server_process()
    api = srv.api()
    stalled: list[socket.socket] = []
    try:
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.sendall(b"GET /api/vms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ")
            stalled.append(s)
        lat = []
        for _ in range(20):
            t0 = time.perf_counter()
            assert api.get("/api/vms").status_code == 200
            lat.append(time.perf_counter() - t0)
        figures["stalled_connections"] = len(stalled)
        figures["requests_while_stalled"] = summary_ms(lat)
    finally:
        for s in stalled:
            s.close()
