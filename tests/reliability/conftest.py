"""Shared tools of the reliability tests: an RSS sampler (peak memory of this process),
a scriptable fake guest on a unix socket, latency summaries, and a figures sink.

Figures (timings) are never asserted; they are printed and, when KVMM_RELIABILITY_OUT
names a file, appended to it as JSON lines so docs/reliability.md can quote a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class RssSampler:
    """Peak RSS of this process while in use (sampled every 5 ms in a thread)."""

    def __init__(self) -> None:
        self.baseline = rss_bytes()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kvmm-t-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / 1e6


def summary_ms(samples: list[float]) -> dict[str, float]:
    """p50/p99/max of latencies given in seconds, in milliseconds."""
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(p99 * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A dict the test fills with its measured figures; printed and optionally saved."""
    data: dict[str, Any] = {}
    yield data
    if not data:
        return
    line = json.dumps({"test": request.node.nodeid, **data}, sort_keys=True)
    print(f"\nKVMM-FIGURES {line}")
    out = os.environ.get("KVMM_RELIABILITY_OUT")
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


class FakeGuest:
    """A unix-socket 'guest' whose first `hostile_connections` connections run
    `behaviour`; later ones behave (answer sync and every request), like a guest whose
    agent was restarted."""

    def __init__(self, path: str, behaviour: Behaviour, hostile_connections: int = 1) -> None:
        self.path = path
        self.behaviour = behaviour
        self.hostile_connections = hostile_connections
        self.connections = 0
        self.bytes_sent = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._serve, self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            if self.connections <= self.hostile_connections:
                await self.behaviour(reader, writer)
            else:
                await behave(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
            writer.close()

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.bytes_sent += len(data)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def reply(msg_id: Any, result: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": msg_id, "result": result}).encode() + b"\n"


async def read_request(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    line = await reader.readline()
    if not line:
        return None
    return json.loads(line.lstrip(b"\xff"))


async def answer_sync(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while (msg := await read_request(reader)) is not None:
        if msg.get("method") == "sync":
            writer.write(b"\xff" + reply(msg["id"], {"nonce": msg["params"]["nonce"]}))
            await writer.drain()
            return


async def behave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A well-behaved guest: sync, and 'pong' to everything else."""
    while (msg := await read_request(reader)) is not None:
        if msg.get("method") == "sync":
            writer.write(b"\xff" + reply(msg["id"], {"nonce": msg["params"]["nonce"]}))
        else:
            writer.write(reply(msg["id"], {"pong": True, "timestamp": time.time()}))
        await writer.drain()


@pytest.fixture
async def fake_guest() -> AsyncIterator[Callable[..., Awaitable[FakeGuest]]]:
    made: list[FakeGuest] = []

    async def make(behaviour: Behaviour, hostile_connections: int = 1) -> FakeGuest:
        path = f"/tmp/kvmm-t-sec-guest-{os.getpid()}-{len(made)}-{time.monotonic_ns()}.sock"
        guest = FakeGuest(path, behaviour, hostile_connections)
        await guest.start()
        made.append(guest)
        return guest

    yield make
    for guest in made:
        await guest.stop()


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    """`wait_for(fn, seconds)`: poll `fn()` until it returns something truthy (returned);
    fail after a generous deadline. For conditions no event announces (another process)."""

    def poll(fn: Callable[[], Any], seconds: float = 60.0, every: float = 0.05) -> Any:
        deadline = time.monotonic() + seconds
        while True:
            value = fn()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {seconds} s: {fn}")
            time.sleep(every)

    return poll
