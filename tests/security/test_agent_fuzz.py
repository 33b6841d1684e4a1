"""Volume fuzzing of the guest agent's input path, in-process (fast): the line framer,
the JSON parser and the JSON-RPC dispatcher get >= 100,000 generated inputs; the
host-side reply framer and client line handler get hostile guest output.

The agent's own test (tests/kvmmanager_agent/test_fuzz.py) drives a few hundred rich
examples through a live agent; this one is about volume. After every generated batch a
well-formed request must still get its correct answer. KVMM_AGENT_FUZZ_SCALE multiplies
the number of examples for a long run.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.kvmmanager_agent.conftest import FakeFreezeBackend, PowerRecorder, make_config

from kvmmanager.agent.client import AgentClient
from kvmmanager.agent.framing import ReplyFramer
from kvmmanager.core.errors import GuestError
from kvmmanager_agent.context import Context
from kvmmanager_agent.dispatcher import Dispatcher, parse
from kvmmanager_agent.framing import OVERLONG, LineFramer
from kvmmanager_agent.server import HANDLERS, Agent

SCALE = int(os.environ.get("KVMM_AGENT_FUZZ_SCALE", "1"))
MAX_LINE = 4096
# Methods whose real handlers are harmless on the test machine whatever the parameters
# (no clock, power, keys, services or commands): everything else is still fuzzed as a
# name, it just never validates into a real call.
SAFE_METHODS = [
    "ping",
    "sync",
    "get_agent_info",
    "get_time",
    "fsfreeze_status",
    "file_stat",
    "file_read",
    "get_disk_usage",
    "nope",
    "",
    "__class__",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**310)
    | st.floats()
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
requests = st.fixed_dictionaries(
    {
        "jsonrpc": st.sampled_from(["2.0", "2.0", "1.0", 2, None]),
        "method": st.sampled_from(SAFE_METHODS) | json_values,
    },
    optional={"id": json_values, "params": json_values},
)
lines = st.one_of(
    requests.map(lambda d: json.dumps(d).encode() + b"\n"),
    st.lists(requests, min_size=0, max_size=70).map(lambda b: json.dumps(b).encode() + b"\n"),
    st.binary(max_size=64),
    st.integers(1, 8000).map(lambda n: b"[" * n + b"\n"),  # nesting to beyond the line cap
    st.integers(1, 400).map(lambda n: b'{"a":' * n + b"1" + b"}" * n + b"\n"),
    st.integers(MAX_LINE - 2, MAX_LINE + 64).map(lambda n: b"7" * n + b"\n"),  # at the limit
    st.sampled_from([b"\xff", b"\n", b"\r\n", b"\xc3\x28\n", b"\xed\xa0\x80\n", b"\x00\n"]),
    st.sampled_from([b'{"jsonrpc":"2.0","id":1,"method":"ping","params":[]}\n', b"1e99999\n"]),
)
batches = st.tuples(st.lists(lines, min_size=10, max_size=16), st.randoms(use_true_random=False))
MUTANTS = 7


def mutants(line: bytes, rnd: Any) -> Iterator[bytes]:
    """Cheap byte-level variants of a generated line (truncated, bit-flipped, spliced
    with the resync byte, doubled, split mid-way): many inputs per generated example."""
    n = len(line)
    for _ in range(MUTANTS):
        kind = rnd.randrange(5)
        cut = rnd.randrange(n + 1)
        if kind == 0:
            yield line[:cut]
        elif kind == 1 and n:
            i = rnd.randrange(n)
            yield line[:i] + bytes([line[i] ^ (1 << rnd.randrange(8))]) + line[i + 1 :]
        elif kind == 2:
            yield line[:cut] + b"\xff" + line[cut:]
        elif kind == 3:
            yield line + line
        else:
            yield line[cut:]


class Capture:
    """A channel that keeps what the agent writes (thread-safe: workers answer too)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.lock = threading.Lock()

    def write(self, data: bytes, timeout: float = 30.0) -> None:
        with self.lock:
            self.data += data

    def take(self) -> list[bytes]:
        with self.lock:
            out = bytes(self.data).split(b"\n")[:-1]
            self.data.clear()
        return out


@pytest.fixture(scope="module")
def fuzz_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    base: Path = tmp_path_factory.mktemp("kvmm-t-sec-fuzz")
    roots = {"read": base, "write": base, "outside": base}
    cfg = make_config(roots, max_message_size_kb=MAX_LINE // 1024, requests_per_second=10**9)
    agent = Agent(cfg, Context(cfg, FakeFreezeBackend(), PowerRecorder()))
    yield agent
    agent.stop()
    agent.drain(10)


def _assert_well_formed(raw: bytes) -> None:
    reply = json.loads(raw[1:] if raw.startswith(b"\xff") else raw)
    for r in reply if isinstance(reply, list) else [reply]:
        assert r["jsonrpc"] == "2.0", r
        assert ("result" in r) != ("error" in r), r


PROBE = b'\xff{"jsonrpc":"2.0","id":"kvmm-probe","method":"get_agent_info"}\n'


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_agent_line_path_survives_100k_inputs(fuzz_agent: Agent) -> None:
    """Framer -> parser -> dispatcher, exactly as the agent's reader runs them."""
    fed = 0
    cap = Capture()
    framer = LineFramer(fuzz_agent.config.max_line_bytes)

    @settings(
        max_examples=1150 * SCALE,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(batches)
    def run(batch: tuple[list[bytes], Any]) -> None:
        nonlocal fed
        parts, rnd = batch
        for line in parts:
            for part in (line, *mutants(line, rnd)):
                for item in framer.feed(part):
                    fuzz_agent.handle_item(item, cap)
                fed += 1
        # A well-formed request after the 0xFF resync gets the right answer at once
        # (get_agent_info is answered inline, by the reader).
        for item in framer.feed(PROBE):
            fuzz_agent.handle_item(item, cap)
        out = cap.take()
        probe = [json.loads(x) for x in out if x.startswith(b'{"jsonrpc":"2.0","id":"kvmm-probe"')]
        assert probe and probe[-1]["result"]["negotiated_protocol_version"] >= 1, out[-3:]
        for raw in out:
            _assert_well_formed(raw)

    run()
    assert fed >= 100_000, fed


@pytest.mark.slow
def test_dispatcher_answers_every_payload(tmp_path: Path) -> None:
    """The dispatcher alone, on parsed payloads: always a reply of the right shape."""
    cfg = make_config({"read": tmp_path, "write": tmp_path, "outside": tmp_path})
    dispatcher = Dispatcher(Context(cfg, FakeFreezeBackend(), PowerRecorder()), HANDLERS)
    seen = 0

    @settings(max_examples=1200 * SCALE, deadline=None, database=None)
    @given(st.one_of(requests, json_values, st.lists(requests, max_size=80)))
    def run(payload: Any) -> None:
        nonlocal seen
        seen += 1
        reply, actions = dispatcher.run(payload)
        assert not actions  # no power action can come out of the safe method set
        if reply is not None:
            _assert_well_formed(json.dumps(reply).encode())

    run()
    reply, _ = dispatcher.run({"jsonrpc": "2.0", "id": 7, "method": "ping"})
    assert reply["id"] == 7 and reply["result"]["pong"] is True
    assert seen >= 1200 * SCALE


def test_parse_never_raises_on_hostile_lines() -> None:
    for line in (b"[" * 200_000, b"\xc3\x28", b"1" * 5000, b"\xed\xa0\x80", b'"\\ud800"'):
        payload, err = parse(line)
        assert (payload is None) != (err is None) or payload == "\ud800"
    framer = LineFramer(16)
    assert framer.feed(b"x" * 100 + b"\n") == [OVERLONG]
    assert framer.feed(b'{"a":1}\n') == [b'{"a":1}']


# -- host side: what a hostile guest writes back ----------------------------------------


guest_output = st.lists(
    st.one_of(
        st.binary(max_size=80),
        st.builds(
            lambda i, r: json.dumps({"jsonrpc": "2.0", "id": i, "result": r}).encode() + b"\n",
            json_values,
            json_values,
        ),
        st.integers(1, 100_000).map(lambda n: b"[" * n + b"\n"),
        st.sampled_from([b"\xff", b"\n", b"\xc3\x28\n", b"9" * 5000 + b"\n"]),
    ),
    min_size=5,
    max_size=40,
)


@pytest.mark.slow
def test_host_reply_path_only_ever_raises_guest_error() -> None:
    """ReplyFramer + AgentClient._on_line on anything: a GuestError (disconnect) or
    nothing, never another exception that would kill the reader task silently."""
    seen = 0

    @settings(max_examples=1500 * SCALE, deadline=None, database=None)
    @given(guest_output)
    def run(chunks: list[bytes]) -> None:
        nonlocal seen
        client = AgentClient(_never_opened, name="kvmm-t-sec-fuzz")
        framer = ReplyFramer(4096)
        seen += len(chunks)  # generated; a disconnect may end the batch early
        try:
            for chunk in chunks:
                for after_sync, line, raw in framer.feed(chunk):
                    client._on_line(after_sync, line, raw)
        except GuestError:
            pass  # the client disconnects this guest: the designed outcome

    run()
    assert seen >= 5 * 1500 * SCALE


async def _never_opened() -> Any:
    raise AssertionError("the fuzzed client never connects")
