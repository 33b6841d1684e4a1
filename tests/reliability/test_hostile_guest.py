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
from tests.reliability.conftest import (
    FakeGuest,
    RssSampler,
    answer_sync,
    behave,
    read_request,
    reply,
    summary_ms,
)

from kvmmanager.agent.client import AgentClient
from kvmmanager.agent.transports import UnixTransport
from kvmmanager.core.errors import AgentUnavailable, GuestError, Timeout

GIB = 1024**3
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


# -- behaviours (each gets the guest, the reader and the writer) ------------------------


async def gib_without_newline(g: FakeGuest, r: asyncio.StreamReader, w: Any) -> None:
    await answer_sync(r, w)
    await read_request(r)
    chunk = b"x" * 65536
    while g.bytes_sent < GIB:
        await g.write(w, chunk)


async def invalid_utf8_then_answer(g: FakeGuest, r: asyncio.StreamReader, w: Any) -> None:
    await answer_sync(r, w)
    msg = await read_request(r)
    assert msg is not None
    await g.write(w, b"\xc3\x28\xa0\xa1 \xed\xa0\x80 \xf8\x88\x80\x80\x80\n" * 5)
    await g.write(w, reply(msg["id"], {"pong": True, "timestamp": 1}))
    await behave(r, w)  # then behaves: the next call needs no reconnect


async def invalid_utf8_flood(g: FakeGuest, r: asyncio.StreamReader, w: Any) -> None:
    await answer_sync(r, w)
    await read_request(r)
    for _ in range(1000):
        await g.write(w, b"\xc3\x28\xa0\xa1\n")
    await behave(r, w)  # then behaves: the next call needs no reconnect


async def deep_nesting(g: FakeGuest, r: asyncio.StreamReader, w: Any) -> None:
    await answer_sync(r, w)
    msg = await read_request(r)
    assert msg is not None
    nested = b"[" * 100_000 + b"]" * 100_000 + b"\n"
    for _ in range(3):
        await g.write(w, nested)
    await g.write(w, b'{"jsonrpc":"2.0","id":' + b"[" * 100_000 + b"\n")
    await g.write(w, reply(msg["id"], {"pong": True, "timestamp": 2}))
    await behave(r, w)  # then behaves: the next call needs no reconnect


async def huge_numbers(g: FakeGuest, r: asyncio.StreamReader, w: Any) -> None:
    await answer_sync(r, w)
    msg = await read_request(r)
    assert msg is not None
    digits = b"9" * 100_000
    await g.write(w, b'{"jsonrpc":"2.0","id":' + digits + b',"result":{"pong":true}}\n')
    await g.write(w, b'{"jsonrpc":"2.0","id":1e999999,"result":{"pong":true}}\n')
    await g.write(w, b'{"jsonrpc":"2.0","id":' + str(msg["id"]).encode() + b".0000000001")
    await g.write(w, b',"result":{"pong":false}}\n')
    await g.write(w, reply(msg["id"], {"pong": True, "timestamp": 1e308}))
    await behave(r, w)  # then behaves: the next call needs no reconnect


async def wrong_ids(g: FakeGuest, r: asyncio.StreamReader, w: Any) -> None:
    await answer_sync(r, w)
    msg = await read_request(r)
    assert msg is not None
    for bad in (msg["id"] + 1, -msg["id"], str(msg["id"]), None, [msg["id"]], True, 0):
        for _ in range(5):
            await g.write(w, reply(bad, {"pong": False}))
    await g.write(w, reply(msg["id"], {"pong": True, "timestamp": 3}))
    await behave(r, w)  # then behaves: the next call needs no reconnect


async def replies_before_requests(g: FakeGuest, r: asyncio.StreamReader, w: Any) -> None:
    # Answers to requests not yet made (ids the client will use next), before the sync.
    for i in range(1, 51):
        await g.write(w, reply(i, {"pong": False, "timestamp": -1}))
    await answer_sync(r, w)
    msg = await read_request(r)
    assert msg is not None
    await g.write(w, reply(msg["id"], {"pong": True, "timestamp": 4}))
    await behave(r, w)  # then behaves: the next call needs no reconnect


async def flood_10k_lines_per_second(g: FakeGuest, r: asyncio.StreamReader, w: Any) -> None:
    await answer_sync(r, w)
    await read_request(r)
    line = reply(987654321, {"spam": "x" * 40})
    t0 = time.monotonic()
    for tick in range(300):  # 100 lines every 10 ms = 10k lines/s, for up to 3 s
        await g.write(w, line * 100)
        delay = t0 + (tick + 1) * 0.01 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the flood, not waiting for a condition


async def never_reads(g: FakeGuest, r: asyncio.StreamReader, w: Any) -> None:
    await asyncio.Event().wait()  # accepted; reads nothing, answers nothing, forever


# name -> (behaviour, does the first call still get its answer?)
SCENARIOS: dict[str, tuple[Callable[..., Awaitable[None]], bool]] = {
    "1 GiB without newline": (gib_without_newline, False),
    "invalid UTF-8 lines, then the answer": (invalid_utf8_then_answer, True),
    "invalid UTF-8 flood": (invalid_utf8_flood, False),
    "100k-deep nested JSON, then the answer": (deep_nesting, True),
    "huge numbers, then the answer": (huge_numbers, True),
    "wrong ids, then the answer": (wrong_ids, True),
    "replies before requests": (replies_before_requests, True),
    "flood of 10k lines/s": (flood_10k_lines_per_second, False),
    "accepts, never reads": (never_reads, False),
}


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
