"""Property-based fuzzing of the agent's input handling: whatever bytes arrive (random,
partial lines, huge lines, deep nesting, bad UTF-8, hostile JSON-RPC), the agent stays up,
every byte it writes is a well-formed reply, and the next well-formed request after a
0xFF resync is answered correctly."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.kvmmanager_agent.conftest import FakeFreezeBackend, PowerRecorder, Raw, make_config

from kvmmanager_agent.context import Context
from kvmmanager_agent.framing import LineFramer
from kvmmanager_agent.server import Agent

PROBE = b'\xff{"jsonrpc":"2.0","id":"probe","method":"ping"}\n'


class Capture:
    def __init__(self) -> None:
        self.data = bytearray()
        self.lock = threading.Lock()

    def write(self, data: bytes, timeout: float = 30.0) -> None:
        with self.lock:
            self.data += data

    def lines(self) -> list[bytes]:
        with self.lock:
            return bytes(self.data).split(b"\n")[:-1]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
methods = st.sampled_from(
    ["ping", "get_agent_info", "file_read", "sync", "nope", "exec_command", "fsfreeze_status"]
)
requests = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "1.0", 2]), "method": methods | json_values},
    optional={"id": json_values, "params": json_values},
).map(lambda d: json.dumps(d).encode() + b"\n")
chunks = st.one_of(
    st.binary(max_size=300),
    requests,
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n + b"\n"),  # deep nesting
    st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"\n"),
    st.integers(5000, 20000).map(lambda n: b"x" * n),  # beyond the 4 KiB test line limit
    st.just(b"\xc3\x28\xa0\xa1\n"),  # bad UTF-8
    st.just(b"\xff"),
    st.just(b"\n"),
)


@pytest.fixture(scope="module")
def fuzz_agent(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("fuzz")
    roots = {"read": base, "write": base, "outside": base}
    cfg = make_config(roots, max_message_size_kb=4, requests_per_second=1_000_000)
    agent = Agent(cfg, Context(cfg, FakeFreezeBackend(), PowerRecorder()))
    yield agent
    agent.drain(5)


def _wait_probe(cap: Capture) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in cap.lines():
            if line.startswith(b'{"jsonrpc":"2.0","id":"probe"'):
                return json.loads(line)
        time.sleep(0.002)
    raise AssertionError("no answer to the probe")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(chunks, max_size=8))
def test_agent_survives_any_input(fuzz_agent: Agent, parts: list[bytes]) -> None:
    cap = Capture()
    framer = LineFramer(fuzz_agent.config.max_line_bytes)
    for part in parts:
        for item in framer.feed(part):
            fuzz_agent.handle_item(item, cap)  # type: ignore[arg-type]
    for item in framer.feed(PROBE):
        fuzz_agent.handle_item(item, cap)  # type: ignore[arg-type]
    probe = _wait_probe(cap)
    assert probe.get("result", {}).get("pong") is True, probe
    for line in cap.lines():
        reply = json.loads(line[1:] if line.startswith(b"\xff") else line)
        items = reply if isinstance(reply, list) else [reply]
        for r in items:
            assert r["jsonrpc"] == "2.0" and ("result" in r) != ("error" in r)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(chunks, max_size=6))
def test_agent_survives_any_input_over_a_socket(
    start_agent_module: Any, parts: list[bytes]
) -> None:
    raw = Raw(start_agent_module.path)
    try:
        for part in parts:
            raw.send(part)
        raw.send(PROBE)
        while True:
            line = raw.line()
            if line.startswith(b'{"jsonrpc":"2.0","id":"probe"'):
                assert json.loads(line)["result"]["pong"] is True
                break
            json.loads(line.lstrip(b"\xff"))
    finally:
        raw.close()


@pytest.fixture(scope="module")
def start_agent_module(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import os

    base: Path = tmp_path_factory.mktemp("fuzzsock")
    cfg = make_config(
        {"read": base, "write": base}, max_message_size_kb=4, requests_per_second=1_000_000
    )
    agent = Agent(cfg, Context(cfg, FakeFreezeBackend(), PowerRecorder()))
    path = f"/tmp/kvmm-t-agent-fuzz-{os.getpid()}.sock"
    ready = threading.Event()
    t = threading.Thread(target=agent.run_unix, args=(path, ready), daemon=True)
    t.start()
    assert ready.wait(10)

    class R:
        pass

    r = R()
    r.path = path  # type: ignore[attr-defined]
    yield r
    agent.stop()
    t.join(10)
    agent.drain(5)
    if os.path.exists(path):
        os.unlink(path)
