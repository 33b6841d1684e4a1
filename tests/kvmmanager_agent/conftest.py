"""Fixtures: a real agent serving on a unix socket in a thread, and a raw line client."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvmmanager_agent.config import Config
from kvmmanager_agent.context import Context
from kvmmanager_agent.server import Agent


class FakeFreezeBackend:
    """Records freeze/thaw calls; real FIFREEZE needs root and a real block filesystem."""

    def __init__(self, mounts: list[str] | None = None) -> None:
        self.mounts = mounts or ["/", "/var"]
        self.frozen: set[str] = set()
        self.calls: list[tuple[str, str]] = []

    def freezable(self) -> list[str]:
        return list(self.mounts)

    def freeze(self, mp: str) -> None:
        self.calls.append(("freeze", mp))
        self.frozen.add(mp)

    def thaw(self, mp: str) -> None:
        self.calls.append(("thaw", mp))
        self.frozen.discard(mp)


class PowerRecorder:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], float]] = []
        self.event = threading.Event()

    def __call__(self, argv: list[str], delay: float) -> None:
        self.calls.append((argv, delay))
        self.event.set()


class RunningAgent:
    def __init__(self, agent: Agent, path: str, thread: threading.Thread) -> None:
        self.agent = agent
        self.path = path
        self.thread = thread
        self.ctx = agent.ctx


class Raw:
    """A raw unix-socket peer speaking bytes, for protocol-level tests."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.settimeout(30)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, params: Any = None, req_id: Any = 1) -> None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(json.dumps(msg).encode() + b"\n")

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("agent closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def reply(self) -> Any:
        return json.loads(self.line())

    def call(self, method: str, params: Any = None, req_id: Any = 1) -> Any:
        self.request(method, params, req_id)
        return self.reply()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    read = tmp_path / "ro"
    write = tmp_path / "rw"
    read.mkdir()
    write.mkdir()
    return {"read": read, "write": write, "outside": tmp_path}


def make_config(roots: dict[str, Path], **overrides: Any) -> Config:
    sec = {
        "allowed_read_paths": [str(roots["read"]), str(roots["write"])],
        "allowed_write_paths": [str(roots["write"])],
        "command_whitelist": ["sh", "echo", "sleep", "cat", "true", "false"],
        "max_command_timeout_seconds": 60,
    }
    sec.update(overrides.pop("security", {}))
    data: dict[str, Any] = {"security": sec}
    data.update(overrides)
    return Config(data)


@pytest.fixture
def start_agent(tmp_path: Path, roots: dict[str, Path]) -> Iterator[Callable[..., RunningAgent]]:
    started: list[RunningAgent] = []

    def start(freeze: Any = None, power: Any = None, **overrides: Any) -> RunningAgent:
        cfg = make_config(roots, **overrides)
        ctx = Context(
            cfg, freeze_backend=freeze or FakeFreezeBackend(), power=power or PowerRecorder()
        )
        agent = Agent(cfg, ctx)
        # Short path: AF_UNIX paths are limited to 108 bytes.
        path = f"/tmp/kvmm-t-agent-{os.getpid()}-{len(started)}-{time.monotonic_ns()}.sock"
        ready = threading.Event()
        thread = threading.Thread(target=agent.run_unix, args=(path, ready), daemon=True)
        thread.start()
        assert ready.wait(10)
        running = RunningAgent(agent, path, thread)
        started.append(running)
        return running

    yield start
    for r in started:
        r.agent.stop()
        r.thread.join(10)
        r.agent.drain(5)
        if os.path.exists(r.path):
            os.unlink(r.path)


@pytest.fixture
def agent(start_agent: Callable[..., RunningAgent]) -> RunningAgent:
    return start_agent()


@pytest.fixture
def raw(agent: RunningAgent) -> Iterator[Raw]:
    r = Raw(agent.path)
    yield r
    r.close()


@pytest.fixture(autouse=True)
def _agent_bytecode_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zipapp run by a test keeps its bytecode cache in a temporary directory, never
    in the host's /var/cache/kvmmanager-agent."""
    cache = tmp_path_factory.mktemp("agent-cache") / "cache"
    monkeypatch.setenv("KVMMANAGER_AGENT_CACHE", str(cache))
