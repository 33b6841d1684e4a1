"""AgentClient against the real agent on a unix socket, and against hostile fake guests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kvmmanager.agent.client import AgentClient
from kvmmanager.agent.transports import UnixTransport
from kvmmanager.core.errors import (
    AgentUnavailable,
    GuestError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    RateLimited,
    Timeout,
    Unsupported,
)


def client_for(path: str, **kw: Any) -> AgentClient:
    # Generous: the test machine's two cores are shared; timing is not under test here.
    kw.setdefault("timeouts", {"short": 30.0})
    return AgentClient(lambda: UnixTransport.open(path), name="t", **kw)


@pytest.fixture
async def client(agent: Any) -> AsyncIterator[AgentClient]:
    c = client_for(agent.path)
    yield c
    await c.close()


async def test_calls_and_status(agent: Any) -> None:
    statuses: list[str] = []
    c = client_for(agent.path, on_status=statuses.append)
    try:
        assert (await c.call("ping"))["pong"] is True
        assert statuses == ["connecting", "connected"]
        info = await c.call("get_agent_info", {"protocol_version": 2})
        assert info["negotiated_protocol_version"] == 2
        assert (await c.call("get_system_info"))["os_type"] == "linux"
        results = await asyncio.gather(*(c.call("ping") for _ in range(20)))
        assert all(r["pong"] for r in results)
    finally:
        await c.close()
    assert statuses[-1] == "disconnected"


async def test_error_mapping(client: AgentClient, roots: dict[str, Path]) -> None:
    with pytest.raises(PermissionDenied) as e1:
        await client.call("file_read", {"path": "/etc/shadow"})
    assert e1.value.field == "path" and e1.value.details["rpc_code"] == -32001
    with pytest.raises(NotFound):
        await client.call("file_read", {"path": str(roots["read"] / "none")})
    with pytest.raises(Timeout):
        await client.call(
            "exec_command", {"command": "sleep", "args": ["5"], "timeout_seconds": 0.2}
        )
    await client.call("fsfreeze_freeze")
    with pytest.raises(GuestError) as e2:
        await client.call("fsfreeze_freeze")  # already frozen: -32000
    assert e2.value.details["rpc_code"] == -32000
    await client.call("fsfreeze_thaw")


async def test_client_validates_before_sending(client: AgentClient) -> None:
    with pytest.raises(InvalidInput) as e:
        await client.call("file_read", {"path": 5})
    assert e.value.field == "path"
    with pytest.raises(InvalidInput):
        await client.call("rm_everything")
    assert client.status == "disconnected"  # nothing was sent, nothing was opened


async def test_stale_reply_is_never_taken_for_the_next_answer(client: AgentClient) -> None:
    """The first request times out on the client; its late reply arrives while the next
    request is outstanding; sync makes sure the next request gets ITS reply."""
    with pytest.raises(Timeout):
        await client.call(
            "exec_command",
            {"command": "sh", "args": ["-c", "sleep 1; echo late"], "timeout_seconds": 10},
            timeout=0.2,
        )
    # The next call resyncs, then runs while the late reply (to id 1) comes in.
    r = await client.call("exec_command", {"command": "sh", "args": ["-c", "sleep 1.5; echo mine"]})
    assert r["stdout"] == "mine\n"
    assert (await client.call("ping"))["pong"] is True


async def test_reconnects_after_agent_restart(
    start_agent: Callable[..., Any],
) -> None:
    first = start_agent()
    c = client_for(first.path)
    try:
        await c.call("ping")
        first.agent.stop()
        first.thread.join(10)
        # Either the pending request sees the channel close, or the reconnect is refused.
        with pytest.raises(AgentUnavailable):
            await c.call("ping")
        # A new agent on the same path: the client reconnects and resyncs by itself.
        second = start_agent()
        os.replace(second.path, first.path)
        assert (await c.call("ping"))["pong"] is True
        assert c.status == "connected"
    finally:
        await c.close()


# -- hostile guests ------------------------------------------------------------------


async def fake_guest(
    tmp_path: Path,
    behaviour: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> tuple[str, asyncio.AbstractServer]:
    path = f"/tmp/kvmm-t-agent-fake-{os.getpid()}-{id(behaviour)}.sock"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    server = await asyncio.start_unix_server(behaviour, path)
    return path, server


async def answer_sync(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read until a sync request and answer it properly."""
    while True:
        line = await reader.readline()
        if not line:
            return
        msg = json.loads(line.lstrip(b"\xff"))
        if msg.get("method") == "sync":
            writer.write(
                b"\xff"
                + json.dumps(
                    {"jsonrpc": "2.0", "id": msg["id"], "result": {"nonce": msg["params"]["nonce"]}}
                ).encode()
                + b"\n"
            )
            await writer.drain()
            return


async def test_garbage_before_sync_is_discarded(tmp_path: Path) -> None:
    async def guest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'garbage {"jsonrpc":"2.0","id":1,"result":"stale"}\n\x00\x01 partial')
        await answer_sync(reader, writer)
        line = await reader.readline()
        msg = json.loads(line)
        # A stale reply with a wrong id, then ours.
        writer.write(
            json.dumps({"jsonrpc": "2.0", "id": 424242, "result": {"pong": False}}).encode() + b"\n"
        )
        writer.write(
            json.dumps(
                {"jsonrpc": "2.0", "id": msg["id"], "result": {"pong": True, "timestamp": 1}}
            ).encode()
            + b"\n"
        )
        await writer.drain()
        await reader.read()

    path, server = await fake_guest(tmp_path, guest)
    c = client_for(path)
    try:
        assert (await c.call("ping"))["pong"] is True
    finally:
        await c.close()
        server.close()


async def test_an_error_code_that_is_not_a_number_is_a_guest_error(tmp_path: Path) -> None:
    # The guest is untrusted: an error object whose code is a list used to escape as a
    # TypeError (unhashable type) from the error mapping instead of a GuestError.
    async def guest(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_sync(reader, writer)
        msg = json.loads(await reader.readline())
        error = {"code": [-32602], "message": "odd code"}
        writer.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "error": error}).encode())
        writer.write(b"\n")
        await writer.drain()
        await reader.read()

    path, server = await fake_guest(tmp_path, guest)
    c = client_for(path)
    try:
        with pytest.raises(GuestError) as caught:
            await c.call("ping")
        assert str(caught.value) == "guest agent: odd code"
    finally:
        await c.close()
        server.close()


async def test_flooding_guest_is_disconnected_and_others_unaffected(
    tmp_path: Path, agent: Any
) -> None:
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_sync(reader, writer)
        with contextlib.suppress(Exception):
            while True:
                writer.write(b"x" * 65536)  # one endless line
                await writer.drain()

    path, server = await fake_guest(tmp_path, flood)
    bad = client_for(path, max_reply_bytes=1024 * 1024)
    good = client_for(agent.path)
    try:
        bad_call = asyncio.create_task(bad.call("get_metrics"))
        # Meanwhile the well-behaved VM answers promptly, many times.
        for _ in range(20):
            assert (await good.call("ping"))["pong"] is True
        with pytest.raises(AgentUnavailable):
            await bad_call
    finally:
        await bad.close()
        await good.close()
        server.close()


async def test_stalling_guest_times_out_and_unsolicited_flood(tmp_path: Path) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_sync(reader, writer)
        await reader.readline()
        # Never answers; floods small unsolicited lines instead.
        with contextlib.suppress(Exception):
            for i in range(100000):
                writer.write(json.dumps({"jsonrpc": "2.0", "id": -i, "result": 1}).encode() + b"\n")
                if i % 100 == 0:
                    await writer.drain()
            await reader.read()

    path, server = await fake_guest(tmp_path, stall)
    c = client_for(path)
    try:
        with pytest.raises((AgentUnavailable, Timeout)):
            await c.call("ping", timeout=5)
    finally:
        await c.close()
        server.close()


async def test_silent_guest_is_unresponsive(tmp_path: Path) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    path, server = await fake_guest(tmp_path, silent)
    c = client_for(path, timeouts={"short": 0.3})
    try:
        with pytest.raises(AgentUnavailable):
            await c.call("ping")
        assert c.status == "unresponsive"
    finally:
        await c.close()
        server.close()


async def test_busy_and_disabled_methods_map_to_errors(start_agent: Callable[..., Any]) -> None:
    running = start_agent(requests_per_second=2, requests_burst=2, disabled_methods=["set_time"])
    c = client_for(running.path)
    try:
        with pytest.raises(RateLimited):
            await asyncio.gather(*(c.call("get_time") for _ in range(10)))
        await asyncio.sleep(1.1)  # let the token bucket refill (a rate, not a wait-for)
        with pytest.raises(Unsupported):
            await c.call("set_time", {"timestamp": 1})
    finally:
        await c.close()


async def test_request_over_the_line_limit_is_refused_before_sending(client: AgentClient) -> None:
    with pytest.raises(InvalidInput) as e:
        await client.call("file_write", {"path": "/tmp/x", "content": "z" * (2 * 1024 * 1024)})
    assert e.value.field == "params"
    assert (await client.call("ping"))["pong"] is True


async def test_a_closed_client_never_connects_again(agent: Any) -> None:
    """A transfer holding the client across the agent's restart must not take QEMU's
    one-client port from the client that replaced it."""
    c = client_for(agent.path)
    assert (await c.call("ping"))["pong"] is True
    await c.close()
    with pytest.raises(AgentUnavailable, match="closed"):
        await c.call("ping")
    assert c.status == "disconnected"


async def test_close_while_connecting_leaves_no_connection(agent: Any) -> None:
    """close() while the socket is being opened (the port closed during a call): the new
    connection is closed at once, not kept by a client nobody uses any more."""
    gate = asyncio.Event()
    opened: list[UnixTransport] = []

    async def opener() -> UnixTransport:
        await gate.wait()
        t = await UnixTransport.open(agent.path)
        opened.append(t)
        return t

    c = AgentClient(opener, name="t", timeouts={"short": 30.0})
    call = asyncio.ensure_future(c.call("ping"))
    await asyncio.sleep(0)
    await c.close()
    gate.set()
    with pytest.raises(AgentUnavailable, match="closed"):
        await call
    assert len(opened) == 1
    assert await opened[0].read() == b""  # closed on our side
