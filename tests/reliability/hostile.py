"""Hostile guests, host side: a scriptable fake guest on a unix socket and the hostile
behaviours of issue 9 item 3. Shared by tests/reliability/test_hostile_guest.py and
bench/hostile_api.py (so no pytest here).

A behaviour is `async def b(guest, reader, writer)`; it runs on a connection the fake
guest accepted and may write through `guest.write` (which counts the bytes sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
GIB = 1024**3


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


# -- behaviours (each gets the guest, the reader and the writer) ------------------------


async def gib_without_newline(g: FakeGuest, r: asyncio.StreamReader, w: Any) -> None:
    await answer_sync(r, w)
    await read_request(r)
    chunk = b"x" * 65536
    sent = 0  # per connection: a guest that is hostile on every connection sends 1 GiB each
    while sent < GIB:
        await g.write(w, chunk)
        sent += len(chunk)


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
