"""Property-based fuzzing of the shipped agent as a separate process, on every CPython 3.8+
of this machine, over a pty as its port: whatever bytes arrive, every line it writes is
RFC 8259 JSON shaped as a JSON-RPC 2.0 reply, and after a 0xFF resync the same process
answers a ping.

Example counts stay modest: this runs once per interpreter (about six), each on one
agent process that serves every example.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.kvmmanager_agent.agentproc import (
    AgentProcess,
    Interpreter,
    build_pyz,
    interpreters,
    strict_json,
)

PYTHONS = interpreters()


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pyz(tmp_path_factory.mktemp("pyz"))


@pytest.fixture(scope="module", params=PYTHONS, ids=[p.label for p in PYTHONS])
def fuzzed(
    request: pytest.FixtureRequest, pyz: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    python: Interpreter = request.param
    workdir = tmp_path_factory.mktemp("fuzzp")
    # A small line limit makes "too long" reachable by small examples.
    config = {"max_message_size_kb": 4, "requests_per_second": 1_000_000}
    proc = AgentProcess(python, pyz, workdir, config=config)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities included: they must never come back
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
methods = st.sampled_from(
    ["ping", "get_agent_info", "file_read", "sync", "nope", "get_time", "fsfreeze_status"]
)
requests = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "1.0", 2]), "method": methods | json_values},
    optional={"id": json_values, "params": json_values},
).map(lambda d: json.dumps(d).encode() + b"\n")  # json.dumps writes NaN/Infinity as Python does
chunks = st.one_of(
    st.binary(max_size=300),
    requests,
    st.lists(requests, max_size=4).map(lambda rs: b"[" + b",".join(r[:-1] for r in rs) + b"]\n"),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n + b"\n"),
    st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"\n"),
    st.integers(5000, 20000).map(lambda n: b"x" * n),  # beyond the 4 KiB line limit
    st.sampled_from([b"\xc3\x28\n", b'"\\ud800\n', b"{'a':1}\n", b'{"a":"x\n', b"\x00\x1f\n"]),
    st.just(b"\xff"),
    st.just(b"\n"),
)
probe_ids = itertools.count()


def _check_reply(line: bytes) -> None:
    reply = strict_json(line[1:] if line.startswith(b"\xff") else line)
    for item in reply if isinstance(reply, list) else [reply]:
        assert isinstance(item, dict) and item["jsonrpc"] == "2.0", item
        assert ("result" in item) != ("error" in item), item


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(parts=st.lists(chunks, max_size=6))
def test_the_agent_process_survives_any_input(fuzzed: AgentProcess, parts: list[bytes]) -> None:
    for part in parts:
        fuzzed.send(part)
    probe = f"probe-{next(probe_ids)}"
    fuzzed.send(
        b"\xff" + json.dumps({"jsonrpc": "2.0", "id": probe, "method": "ping"}).encode() + b"\n"
    )
    while True:
        line = fuzzed.line()
        _check_reply(line)
        reply = strict_json(line.lstrip(b"\xff"))
        if isinstance(reply, dict) and reply.get("id") == probe:
            assert reply["result"]["pong"] is True, reply
            break
    assert fuzzed.proc.poll() is None and fuzzed.proc.pid == fuzzed.pid
