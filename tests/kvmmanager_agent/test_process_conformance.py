"""The shipped zipapp, as a separate process on every CPython 3.8+ of this machine, over a
pty as its port: JSON-RPC 2.0 (sections 4-7), malformed lines of every kind, the 0xFF
resync and `sync`. After each case the agent is the same process and answers a ping.

One agent process per interpreter serves the whole module (its first start compiles
the bytecode cache; later cases reuse it, as a guest's agent serves one host for days).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.kvmmanager_agent.agentproc import (
    MIN_VERSIONS,
    SHIPPED_CONFIG,
    START_TIMEOUT,
    AgentProcess,
    Interpreter,
    build_pyz,
    interpreters,
    strict_json,
)

PYTHONS = interpreters()


def test_at_least_three_python_versions_are_exercised() -> None:
    # Every interpreter found runs every case below (none is skipped), so fewer than
    # three here means fewer than three exercised.
    versions = {p.version for p in PYTHONS}
    assert len(versions) >= MIN_VERSIONS, [p.label for p in PYTHONS]


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pyz(tmp_path_factory.mktemp("pyz"))


def module_config(workdir: Path) -> dict[str, Any]:
    """The shipped config, with a few commands and this test's directory allowed."""
    cfg = json.loads(SHIPPED_CONFIG.read_text())
    sec = cfg["security"]
    sec["allowed_read_paths"] = [str(workdir / "files")]
    sec["allowed_write_paths"] = [str(workdir / "files")]
    sec["command_whitelist"] = ["sleep", "kvmm-no-such-command"]
    cfg["max_concurrent_requests"] = 1
    return cfg


@pytest.fixture(scope="module", params=PYTHONS, ids=[p.label for p in PYTHONS])
def agentp(
    request: pytest.FixtureRequest, pyz: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AgentProcess]:
    python: Interpreter = request.param
    workdir = tmp_path_factory.mktemp("agentp")
    (workdir / "files").mkdir()
    (workdir / "files" / "latin1.txt").write_bytes(b"caf\xe9\n")
    proc = AgentProcess(python, pyz, workdir, config=module_config(workdir))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


# -- expectations ---------------------------------------------------------------------


@dataclass(frozen=True)
class Ok:
    id: Any


@dataclass(frozen=True)
class Err:
    id: Any
    code: int


@dataclass(frozen=True)
class Batch:
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    replies: tuple[Any, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)


def _shape(reply: Any) -> Any:
    assert isinstance(reply, dict) and reply.get("jsonrpc") == "2.0", reply
    assert ("result" in reply) != ("error" in reply), reply
    if "error" in reply:
        err = reply["error"]
        assert isinstance(err["code"], int) and isinstance(err["message"], str), reply
        return Err(reply["id"], err["code"])
    return Ok(reply["id"])


def check(agentp: AgentProcess, case: Case) -> None:
    agentp.send(case.data.replace(b"@files", str(agentp.workdir / "files").encode()))
    for expected in case.replies:
        reply = agentp.reply()
        if isinstance(expected, Batch):
            # Section 6: an array of the replies, in any order.
            assert isinstance(reply, list), reply
            got = sorted((_shape(r) for r in reply), key=repr)
            assert got == sorted(expected.items, key=repr), reply
        else:
            assert _shape(reply) == expected, reply
    if not case.replies:
        # Notifications (and batches of them) are never answered: nothing may arrive.
        assert agentp.quiet(0.3) == b""
    agentp.assert_alive()


def line(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def req(method: Any, req_id: Any = 1, params: Any = None, **extra: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": req_id}
    if params is not None:
        msg["params"] = params
    msg.update(extra)
    return msg


def note(method: Any, params: Any = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    return msg


PARSE, INVALID, NOT_FOUND, PARAMS = -32700, -32600, -32601, -32602
TWO_MIB = 2 * 1024 * 1024

JSONRPC_CASES = [
    # Section 4: request objects, ids of every allowed type.
    Case("call-int-id", line(req("ping", 1)), (Ok(1),)),
    Case("call-string-id", line(req("ping", "abc")), (Ok("abc"),)),
    Case("call-null-id", line(req("ping", None)), (Ok(None),)),
    Case("call-fractional-id", line(req("ping", 1.5)), (Ok(1.5),)),
    Case("call-positional-params", line(req("get_agent_info", 2, [1])), (Ok(2),)),
    Case("call-named-params", line(req("get_agent_info", 3, {"protocol_version": 1})), (Ok(3),)),
    # Section 4.1: notifications are not answered, whatever happens to them.
    Case("notification", line(note("ping"))),
    Case("notification-unknown-method", line(note("update", [1, 2, 3, 4, 5]))),
    Case("notification-bad-params", line(note("ping", {"nope": 1}))),
    Case("notification-slow-method", line(note("get_system_info"))),
    # Section 5.1: every error code.
    Case(
        "parse-error",
        b'{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]\n',
        (Err(None, PARSE),),
    ),
    Case(
        "invalid-request-method-type",
        line({"jsonrpc": "2.0", "method": 1, "params": "bar"}),
        (Err(None, INVALID),),
    ),
    Case("invalid-request-no-jsonrpc", line({"method": "ping", "id": 4}), (Err(4, INVALID),)),
    Case("invalid-request-jsonrpc-1", line(req("ping", 5, jsonrpc="1.0")), (Err(5, INVALID),)),
    Case("invalid-request-id-object", line(req("ping", {"a": 1})), (Err(None, INVALID),)),
    Case("invalid-request-id-bool", line(req("ping", True)), (Err(None, INVALID),)),
    Case("invalid-request-params-string", line(req("ping", 6, "bar")), (Err(6, INVALID),)),
    Case("invalid-request-not-object", b"42\n", (Err(None, INVALID),)),
    Case("method-not-found", line(req("foobar", "1")), (Err("1", NOT_FOUND),)),
    Case("method-not-found-rpc-prefix", line(req("rpc.discover", 7)), (Err(7, NOT_FOUND),)),
    Case("invalid-params-unknown", line(req("ping", 8, {"x": 1})), (Err(8, PARAMS),)),
    Case("invalid-params-missing", line(req("sync", 9, {})), (Err(9, PARAMS),)),
    Case(
        "invalid-params-type",
        line(req("get_agent_info", 10, {"protocol_version": "2"})),
        (Err(10, PARAMS),),
    ),
    Case("invalid-params-too-many-positional", line(req("ping", 11, [1])), (Err(11, PARAMS),)),
    # The agent's own codes (-32000..-32004).
    Case(
        "command-failed",
        line(req("file_read", 12, {"path": "@files/latin1.txt"})),
        (Err(12, -32000),),
    ),
    Case(
        "permission-denied", line(req("file_read", 13, {"path": "/etc/shadow"})), (Err(13, -32001),)
    ),
    Case(
        "not-found",
        line(req("exec_command", 14, {"command": "kvmm-no-such-command"})),
        (Err(14, -32002),),
    ),
    Case(
        "timeout",
        line(req("exec_command", 15, {"command": "sleep", "args": ["30"], "timeout_seconds": 0.5})),
        (Err(15, -32003),),
    ),
    Case(
        "busy",
        # max_concurrent_requests is 1: the second of two slow calls sent together is refused.
        line(req("exec_command", 16, {"command": "sleep", "args": ["2"]}))
        + line(req("exec_command", 17, {"command": "sleep", "args": ["2"]})),
        (Err(17, -32004), Ok(16)),
    ),
    # Section 6: batches.
    Case(
        "batch-parse-error",
        b'[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},'
        b'{"jsonrpc": "2.0", "method"\n',
        (Err(None, PARSE),),
    ),
    Case("batch-empty", b"[]\n", (Err(None, INVALID),)),
    Case("batch-one-invalid", b"[1]\n", (Batch((Err(None, INVALID),)),)),
    Case("batch-all-invalid", b"[1,2,3]\n", (Batch((Err(None, INVALID),) * 3),)),
    Case(
        "batch-mixed",
        line(
            [
                req("ping", "1"),
                note("ping"),
                req("get_agent_info", "2"),
                {"foo": "boo"},
                req("foo.get", "5", {"name": "myself"}),
                req("get_data", "9"),
            ]
        ),
        (Batch((Ok("1"), Ok("2"), Err(None, INVALID), Err("5", NOT_FOUND), Err("9", NOT_FOUND))),),
    ),
    Case(
        "batch-all-notifications", line([note("ping"), note("update", [1, 2, 4]), note("foobar")])
    ),
    Case("batch-too-large", line([req("ping", i) for i in range(65)]), (Err(None, INVALID),)),
]


MALFORMED_CASES = [
    Case("truncated", b'{"jsonrpc":"2.0","id":1,"method":"pi\n', (Err(None, PARSE),)),
    Case("truncated-after-colon", b'{"jsonrpc":\n', (Err(None, PARSE),)),
    Case("unterminated-string", b'{"a":"x\n', (Err(None, PARSE),)),
    Case("unterminated-escape", b'"\\ud800\n', (Err(None, PARSE),)),
    Case("bad-escape", b'{"a":"\\x41"}\n', (Err(None, PARSE),)),
    Case(
        "control-char-in-string",
        b'{"jsonrpc":"2.0","id":1,"method":"pi\x01ng"}\n',
        (Err(None, PARSE),),
    ),
    Case("control-chars-only", b"\x00\x01\x02\x1b[A\n", (Err(None, PARSE),)),
    Case("single-quotes", b"{'a':1}\n", (Err(None, PARSE),)),
    Case(
        "single-quoted-request", b"{'jsonrpc':'2.0','id':1,'method':'ping'}\n", (Err(None, PARSE),)
    ),
    Case("trailing-garbage", b'{"jsonrpc":"2.0","id":1,"method":"ping"}x\n', (Err(None, PARSE),)),
    Case("trailing-comma", b'{"jsonrpc":"2.0","id":1,"method":"ping",}\n', (Err(None, PARSE),)),
    Case(
        "lone-surrogate-id", b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}\n', (Ok("\ud800"),)
    ),
    Case(
        "lone-low-surrogate-method",
        b'{"jsonrpc":"2.0","id":1,"method":"\\udc00"}\n',
        (Err(1, NOT_FOUND),),
    ),
    Case(
        "invalid-utf8", b'{"jsonrpc":"2.0","id":1,"method":"ping\xc3\x28"}\n', (Err(None, PARSE),)
    ),
    Case(
        "utf8-encoded-surrogate",
        b'{"jsonrpc":"2.0","id":"\xed\xa0\x80","method":"ping"}\n',
        (Err(None, PARSE),),
    ),
    Case("utf8-overlong", b'{"a":"\xc0\xaf"}\n', (Err(None, PARSE),)),
    Case("utf8-fe", b"\xfe\xfe\n", (Err(None, PARSE),)),
    Case("two-mib-without-newline", b"a" * TWO_MIB + b"\n", (Err(None, INVALID),)),
    Case(
        "two-mib-string-without-newline", b'{"a":"' + b"x" * TWO_MIB + b"\n", (Err(None, INVALID),)
    ),
    Case("nesting-100k-arrays", b"[" * 100_000 + b"]" * 100_000 + b"\n", (Err(None, PARSE),)),
    Case(
        "nesting-100k-objects",
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"\n",
        (Err(None, PARSE),),
    ),
    Case("nesting-100k-unclosed", b"[" * 100_000 + b"\n", (Err(None, PARSE),)),
    Case(
        "nesting-in-params",
        b'{"jsonrpc":"2.0","id":1,"method":"ping","params":' + b"[" * 100_000 + b"\n",
        (Err(None, PARSE),),
    ),
    Case(
        "huge-number", b'{"jsonrpc":"2.0","id":1e999999,"method":"ping"}\n', (Err(None, INVALID),)
    ),
    Case("nan-id", b'{"jsonrpc":"2.0","id":NaN,"method":"ping"}\n', (Err(None, INVALID),)),
    Case(
        "infinity-id", b'{"jsonrpc":"2.0","id":-Infinity,"method":"ping"}\n', (Err(None, INVALID),)
    ),
    Case(
        "nan-param",
        b'{"jsonrpc":"2.0","id":18,"method":"get_agent_info","params":{"protocol_version":NaN}}\n',
        (Err(18, PARAMS),),
    ),
    Case(
        "infinite-param",
        b'{"jsonrpc":"2.0","id":19,"method":"list_processes","params":[1e400]}\n',
        (Err(19, PARAMS),),
    ),
    Case("blank-lines", b"\n\r\n   \n\t\n"),
    Case("crlf-line", b'{"jsonrpc":"2.0","id":20,"method":"ping"}\r\n', (Ok(20),)),
]


@pytest.mark.parametrize("case", JSONRPC_CASES, ids=[c.name for c in JSONRPC_CASES])
def test_jsonrpc_2_0(agentp: AgentProcess, case: Case) -> None:
    check(agentp, case)


@pytest.mark.parametrize("case", MALFORMED_CASES, ids=[c.name for c in MALFORMED_CASES])
def test_malformed_line(agentp: AgentProcess, case: Case) -> None:
    check(agentp, case)


def test_ff_resyncs_a_partial_line(agentp: AgentProcess) -> None:
    # Half a request, then the host's 0xFF: the half is dropped, no parse error follows.
    agentp.send(b'{"jsonrpc":"2.0","id":99,"meth' + b"\xff" + line(req("ping", 100)))
    assert _shape(agentp.reply()) == Ok(100)
    agentp.assert_alive()


def test_ff_resyncs_two_mib_without_newline(agentp: AgentProcess) -> None:
    agentp.send(b"z" * TWO_MIB + b"\xff" + line(req("ping", 101)))
    assert _shape(agentp.reply()) == Ok(101)
    agentp.assert_alive()


def test_sync_answers_ff_then_its_nonce(agentp: AgentProcess) -> None:
    # Stale half-line first, as after a host timeout; sync's own 0xFF flushes it.
    agentp.send(
        b'{"jsonrpc":"2.0","id":1,"method":"pi' + b"\xff" + line(req("sync", 102, {"nonce": 2**53}))
    )
    raw = agentp.line()
    assert raw.startswith(b"\xff"), raw
    reply = strict_json(raw[1:])
    assert reply == {"jsonrpc": "2.0", "id": 102, "result": {"nonce": 2**53}}
    agentp.assert_alive()


def test_two_thousand_back_to_back_pings_are_all_answered(agentp: AgentProcess) -> None:
    # The shipped rate limit: a token bucket with a burst, and ping is never refused.
    agentp.send(b"".join(line(req("ping", f"b{i}")) for i in range(2000)))
    replies = [agentp.reply() for _ in range(2000)]
    assert [r for r in replies if "result" not in r] == []
    assert {r["id"] for r in replies} == {f"b{i}" for i in range(2000)}
    agentp.assert_alive()


def test_stalled_raw_payload_is_abandoned_and_sync_recovers(agentp: AgentProcess) -> None:
    # A host that dies 10 bytes into a 200-byte upload chunk: the agent must give the
    # chunk up (answered, nothing written) and hear the host's 0xFF + sync afterwards.
    target = agentp.workdir / "files" / "stalled.bin"
    opened = agentp.call("file_open", {"path": str(target), "mode": "w"})
    handle = opened["result"]["handle"]
    head = req("file_write_chunk", "w", {"handle": handle, "offset": 0, "binary_length": 200})
    agentp.send(line(head) + b"0123456789")
    reply = agentp.reply()
    assert _shape(reply) == Err("w", -32003), reply
    assert "nothing written" in reply["error"]["message"], reply
    agentp.send(b"\xff" + line(req("sync", "s1", {"nonce": 41})))
    raw = agentp.line()
    assert raw.startswith(b"\xff"), raw
    assert strict_json(raw[1:]) == {"jsonrpc": "2.0", "id": "s1", "result": {"nonce": 41}}
    closed = agentp.call("file_close", {"handle": handle})
    assert "result" in closed, closed
    assert target.read_bytes() == b""  # file_close renames the written sibling over it
    agentp.assert_alive()


LONE = "\ud800"
# (method, params, the field the -32602 must name); "@files" is the allowed directory.
SURROGATE_CASES = [
    ("file_write", {"path": "@files/" + LONE, "content": "x"}, "path"),
    ("file_open", {"path": "@files/" + LONE, "mode": "w"}, "path"),
    ("file_stat", {"path": "@files/" + LONE}, "path"),
    ("file_write", {"path": "@files/s.txt", "content": "a" + LONE}, "content"),
    ("exec_command", {"command": "sleep", "args": ["0", LONE]}, "args"),
    ("exec_command", {"command": "sleep", "args": ["0"], "env": {LONE: "v"}}, "env"),
    ("exec_command", {"command": "sleep", "args": ["0"], "env": {"K": LONE}}, "env"),
    ("exec_command", {"command": "sleep", "args": ["0"], "input": LONE}, "input"),
    ("exec_start", {"command": "sleep", "args": [LONE]}, "args"),
    ("ssh_authorized_keys", {"user": "root" + LONE, "action": "list"}, "user"),
    ("file_read_chunk", {"handle": 0, "offset": 2**63}, "offset"),
]


@pytest.mark.parametrize(
    "method,params,field",
    SURROGATE_CASES,
    ids=[f"{m}-{f}-{i}" for i, (m, _, f) in enumerate(SURROGATE_CASES)],
)
def test_unusable_param_is_invalid_params_naming_the_field(
    agentp: AgentProcess, method: str, params: dict[str, Any], field: str
) -> None:
    # Lone surrogates (no text: no path, argv entry or file content can hold one) and
    # offsets beyond an off_t are the caller's mistake: -32602 naming the field, never
    # -32603 with a traceback.
    files = str(agentp.workdir / "files")
    real = json.loads(json.dumps(params).replace("@files", files))
    reply = agentp.call(method, real)
    assert reply.get("error", {}).get("code") == PARAMS, reply
    assert reply["error"].get("data") == {"field": field}, reply
    assert "Traceback" not in json.dumps(reply), reply
    agentp.assert_alive()


@pytest.mark.parametrize("sign", ["", "-"], ids=["positive", "negative"])
def test_five_thousand_digit_integer_is_invalid_params_keeping_the_id(
    agentp: AgentProcess, sign: str
) -> None:
    # 3.11+ refuses int() of more than 4300 digits: that must not turn a well-formed
    # request into a parse error with a null id and Python's wording.
    digits = sign + "7" * 5000
    agentp.send(
        b'{"jsonrpc":"2.0","id":"big","method":"list_processes","params":{"limit":'
        + digits.encode()
        + b"}}\n"
    )
    reply = agentp.reply()
    assert _shape(reply) == Err("big", PARAMS), reply
    assert "4300" not in reply["error"]["message"], reply
    agentp.assert_alive()


BROKEN_CONFIGS = [
    ('{"requests_per_second": NaN}', "config key requests_per_second must be a finite"),
    ('{"max_concurrent_requests": 1e999}', "config key max_concurrent_requests must be a finite"),
    ("[]", "must hold a JSON object"),
    ("null", "must hold a JSON object"),
    ('{"max_concurrent_requests": -1}', "config key max_concurrent_requests must be between"),
    ('{"max_concurrent_requests": 2.5}', "config key max_concurrent_requests must be a whole"),
    ('{"max_message_size_kb": 0}', "config key max_message_size_kb must be between"),
    ('{"requests_per_second": -5}', "config key requests_per_second must be between"),
    ('{"requests_burst": 0}', "config key requests_burst must be between"),
    ('{"log_level": "loud"}', "config key log_level must be one of"),
]


@pytest.mark.parametrize("python", PYTHONS, ids=[p.label for p in PYTHONS])
def test_broken_config_is_refused_with_rc_2(python: Interpreter, pyz: Path, tmp_path: Path) -> None:
    # Each is refused at start, naming the key, instead of a traceback (rc 1) or being
    # silently clamped to something else or read as the default config.
    for text, message in BROKEN_CONFIGS:
        proc = AgentProcess(python, pyz, tmp_path, config_text=text)
        try:
            rc = proc.proc.wait(START_TIMEOUT)
            out = proc.log()
        finally:
            proc.stop()
        assert (rc, "kvmmanager-agent: " in out, message in out) == (2, True, True), (text, out)
        assert "Traceback" not in out, (text, out)
