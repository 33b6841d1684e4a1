"""A channel shared by several managers (design.md decision 6): QEMU's end takes ONE
client, so a client holds it only while it talks and waits its turn when it is busy.

`OneClientChannel` stands in for QEMU's chardev in front of the real agent with the same
kernel semantics: a listening unix socket with a backlog of 0 that accepts the next
client only once the current one left; a connect beyond the backlog fails with EAGAIN.
The real QEMU case is tests/e2e/test_55_two_managers.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kvmmanager.agent.client import AgentClient
from kvmmanager.agent.transports import ChannelBusy, Transport, UnixTransport


class OneClientChannel:
    def __init__(self, agent_path: str) -> None:
        self.agent_path = agent_path
        self.path = f"/tmp/kvmm-t-chan-{os.getpid()}-{time.monotonic_ns()}.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(0)
        self.served = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.served += 1
            with client, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as up:
                up.connect(self.agent_path)
                self._pump(client, up)

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        """Forward both ways until the client leaves (then drop the agent side too)."""

        def copy(src: socket.socket, dst: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    dst.sendall(data)
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

        t = threading.Thread(target=copy, args=(b, a), daemon=True)
        t.start()
        copy(a, b)
        t.join(10)

    def occupy_backlog(self) -> None:
        """A client that connected and left before it was accepted: it fills the one
        backlog slot until the channel accepts (and drops) it, as on a busy QEMU port."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.path)
        s.close()

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(10)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


@pytest.fixture
def channel(agent: Any) -> Iterator[OneClientChannel]:
    ch = OneClientChannel(agent.path)
    yield ch
    ch.close()


class Recorder:
    """The opener of a client, noting each connect that found the channel busy."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.busy = 0

    async def __call__(self) -> Transport:
        try:
            return await UnixTransport.open(self.path)
        except ChannelBusy:
            self.busy += 1
            raise


def make(opener: Any, **kw: Any) -> AgentClient:
    kw.setdefault("timeouts", {"short": 30.0})
    return AgentClient(opener, name="t", **kw)


async def wait_until(pred: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_an_idle_client_releases_the_channel_and_keeps_its_status(
    channel: OneClientChannel,
) -> None:
    statuses: list[str] = []
    c = make(Recorder(channel.path), idle_release_seconds=0.2, on_status=statuses.append)
    try:
        assert (await c.call("ping"))["pong"] is True
        assert c.holding
        await wait_until(lambda: not c.holding)
        # The channel is free: another client is served at once.
        other = make(Recorder(channel.path), idle_release_seconds=None)
        try:
            assert (await other.call("ping"))["pong"] is True
        finally:
            await other.close()
        assert (await c.call("get_time"))["timestamp"] > 0
        # Released and reconnected: still "connected", no connecting/connected churn.
        assert statuses == ["connecting", "connected"]
        assert channel.served == 3
    finally:
        await c.close()


async def test_a_busy_channel_is_waited_for_not_failed(channel: OneClientChannel) -> None:
    holder = make(Recorder(channel.path), idle_release_seconds=0.5)
    waiter_opener = Recorder(channel.path)
    waiter = make(waiter_opener, idle_release_seconds=0.1)
    try:
        assert (await holder.call("ping"))["pong"] is True
        channel.occupy_backlog()
        # EAGAIN now; the holder lets go half a second after its reply.
        r = await waiter.call("get_system_info")
        assert r["os_type"] == "linux"
        assert waiter_opener.busy >= 1
        # Interleaved calls from both get their own answers.
        for i in range(5):
            a, b = await asyncio.gather(
                holder.call("exec_command", {"command": "echo", "args": [f"h{i}"]}),
                waiter.call("exec_command", {"command": "echo", "args": [f"w{i}"]}),
            )
            assert a["stdout"].strip() == f"h{i}"
            assert b["stdout"].strip() == f"w{i}"
    finally:
        await holder.close()
        await waiter.close()


async def test_a_channel_busy_too_long_says_who_holds_it(channel: OneClientChannel) -> None:
    holder = make(Recorder(channel.path), idle_release_seconds=None)
    statuses: list[str] = []
    waiter = make(Recorder(channel.path), busy_wait_seconds=0.5, on_status=statuses.append)
    try:
        assert (await holder.call("ping"))["pong"] is True
        channel.occupy_backlog()
        with pytest.raises(ChannelBusy) as exc:
            await waiter.call("ping")
        msg = exc.value.message
        assert "held by another client" in msg and "Errno" not in msg
        assert exc.value.details["attempts"] > 1
        assert "unresponsive" not in statuses  # busy is not a dead agent
    finally:
        await holder.close()
        await waiter.close()
