"""A hostile guest, host side: fake guests on unix sockets, driven through the manager's
agent client (kvmmanager.agent.AgentClient, as AgentService uses it), while a real agent
in another 'VM' is pinged all along.

For each hostile behaviour: this process's memory stays within +50 MB, the misbehaving
VM is cut off (marked unresponsive, or its bad lines dropped) and re-synced on the next
call, a reply is never mixed up with another request's, nothing crashes, and the other
VM keeps answering. Round-trip medians of the other VM are recorded, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tests.kvmmanager_agent.conftest import roots, start_agent  # noqa: F401 (fixtures)
from tests.reliability.conftest import RssSampler, summary_ms
from tests.reliability.hostile import (
    GIB,
    SCENARIOS,
    FakeGuest,
    flood_10k_lines_per_second,
    gib_without_newline,
)

from kvmmanager.agent.client import AgentClient
from kvmmanager.agent.transports import UnixTransport
from kvmmanager.core.errors import AgentUnavailable, GuestError, Timeout

MEMORY_BUDGET_MB = 50
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def client_for(path: str, statuses: list[str]) -> AgentClient:
    # Short sync timeout: a guest that never answers is declared unresponsive quickly.
    return AgentClient(
        lambda: UnixTransport.open(path),
        name="kvmm-t-sec-hostile",
        timeouts={"short": 2.0, "normal": 5.0},
        on_status=statuses.append,
    )


async def _ping_loop(good: AgentClient, stop: asyncio.Event, out: list[float]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        result = await good.call("ping")
        out.append(time.perf_counter() - t0)
        assert result["pong"] is True


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_hostile_guests_are_contained(
    start_agent: Any,  # noqa: F811
    fake_guest: Callable[..., Awaitable[FakeGuest]],
    figures: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="kvmmanager.agent.client")
    # The other VM allows more than the default 200 requests/s: we ping it back to back.
    other_vm = start_agent(requests_per_second=1_000_000)
    good = AgentClient(lambda: UnixTransport.open(other_vm.path), name="kvmm-t-sec-good")
    try:
        await good.call("ping")
        baseline: list[float] = []
        for _ in range(300):
            t0 = time.perf_counter()
            await good.call("ping")
            baseline.append(time.perf_counter() - t0)
        figures["other_vm_baseline"] = summary_ms(baseline)
        for name, (behaviour, answered) in SCENARIOS.items():
            figures[name] = await _scenario(fake_guest, good, behaviour, answered, caplog)
    finally:
        await good.close()
    assert good.status == "disconnected"


async def _scenario(
    fake_guest: Callable[..., Awaitable[FakeGuest]],
    good: AgentClient,
    behaviour: Callable[..., Awaitable[None]],
    answered: bool,
    caplog: pytest.LogCaptureFixture,
) -> dict[str, Any]:
    holder: list[FakeGuest] = []

    async def bound(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await behaviour(holder[0], r, w)

    guest = await fake_guest(bound)
    holder.append(guest)
    statuses: list[str] = []
    bad = client_for(guest.path, statuses)
    stop = asyncio.Event()
    during: list[float] = []
    caplog.clear()
    pinger = asyncio.create_task(_ping_loop(good, stop, during))
    try:
        with RssSampler() as mem:
            t0 = time.perf_counter()
            try:
                first = await bad.call("ping")
                outcome = "answered"
                # Never someone else's reply: the 'pong: false' decoys must not get through.
                assert first == {"pong": True, "timestamp": first["timestamp"]}
                assert first["timestamp"] > 0
            except (AgentUnavailable, Timeout, GuestError) as exc:
                outcome = f"cut off ({exc.code})"
            contained_s = time.perf_counter() - t0
            assert (outcome == "answered") is answered, outcome
            if not answered:
                assert "unresponsive" in statuses, statuses
            # The guest 'restarts' its agent: the next call reconnects and re-syncs.
            again = await bad.call("ping")
            assert again["pong"] is True
            assert statuses[-1] == "connected"
        stop.set()
        await pinger
    finally:
        stop.set()
        pinger.cancel()
        with contextlib.suppress(BaseException):
            await pinger
        await bad.close()
    assert mem.growth_mb < MEMORY_BUDGET_MB, f"memory grew {mem.growth_mb:.1f} MB"
    assert guest.bytes_sent < GIB
    # One warning per misbehaving connection, not one per bad line.
    warnings = [r for r in caplog.records if r.name == "kvmmanager.agent.client"]
    assert len(warnings) <= 1, [r.getMessage() for r in warnings]
    return {
        "outcome": outcome,
        "contained_ms": round(contained_s * 1000, 1),
        "guest_bytes_sent": guest.bytes_sent,
        "rss_growth_mb": round(mem.growth_mb, 1),
        "statuses": statuses,
        "other_vm_during": summary_ms(during),
    }


async def test_fake_guest_protocol_helpers_round_trip(
    fake_guest: Callable[..., Awaitable[FakeGuest]],
) -> None:
    """The well-behaved fake answers like the real agent's sync/ping (fast, always run)."""

    async def hostile_never(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        raise AssertionError("no hostile connection expected")

    guest = await fake_guest(hostile_never, hostile_connections=0)
    statuses: list[str] = []
    c = client_for(guest.path, statuses)
    try:
        assert (await c.call("ping"))["pong"] is True
        assert json.loads(json.dumps(statuses)) == ["connecting", "connected"]
    finally:
        await c.close()


async def test_flooding_guest_marks_the_vm_unresponsive_in_the_inventory(
    manager: Any, fake_guest: Callable[..., Awaitable[FakeGuest]]
) -> None:
    """Through the service the manager uses: the offending VM's inventory entry shows
    `unresponsive` (and a domain.agent event says so), then `connected` after re-sync."""
    holder: list[FakeGuest] = []

    async def flood(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await flood_10k_lines_per_second(holder[0], r, w)

    guest = await fake_guest(flood)
    holder.append(guest)

    async def opener(host: str, uuid: str) -> Any:
        return await UnixTransport.open(guest.path)

    manager.agents._opener = opener  # the test driver's VM has no agent channel
    await manager.registry.get("local").wait_connected(30)
    vm = manager.inventory.domain("local", "test")
    sub = manager.bus.subscribe(
        predicate=lambda e: e.kind == "domain.agent" and e.subject == vm.uuid
    )
    client = manager.agents.client("local", "test")
    with pytest.raises((AgentUnavailable, GuestError)):
        await client.call("ping")
    assert manager.inventory.domain("local", "test").agent_status == "unresponsive"
    seen: list[str] = []
    async with asyncio.timeout(30):
        while "unresponsive" not in seen:
            seen.append((await sub.get()).data.get("status"))
    assert (await client.call("ping"))["pong"] is True
    assert manager.inventory.domain("local", "test").agent_status == "connected"


async def test_a_guest_hostile_on_every_connection_is_retried_later_and_later(
    fake_guest: Callable[..., Awaitable[FakeGuest]],
) -> None:
    """Each connection to a 1 GiB guest costs the manager a 16 MiB read: after the first
    immediate retry, calls fail at once until the backoff has passed, without connecting;
    a real answer afterwards forgives everything."""
    holder: list[FakeGuest] = []

    async def gib(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await gib_without_newline(holder[0], r, w)

    guest = await fake_guest(gib, hostile_connections=2)
    holder.append(guest)
    statuses: list[str] = []
    c = client_for(guest.path, statuses)
    try:
        for _ in range(2):  # the first retry is immediate
            with pytest.raises((AgentUnavailable, GuestError)):
                await c.call("ping")
        assert guest.connections == 2
        with pytest.raises(AgentUnavailable, match="next attempt in") as refused:
            await c.call("ping")
        assert guest.connections == 2  # refused at once: no third connection
        assert 0 < refused.value.details["retry_after_seconds"] <= 1
        assert statuses[-1] == "unresponsive"
        c._retry_at = 0.0  # the second has passed
        assert (await c.call("ping"))["pong"] is True  # the third connection behaves
        assert guest.connections == 3 and statuses[-1] == "connected"
        assert c._strikes == 0
    finally:
        await c.close()
