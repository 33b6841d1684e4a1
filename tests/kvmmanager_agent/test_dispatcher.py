"""JSON-RPC 2.0 semantics, straight through the dispatcher (no transport)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.kvmmanager_agent.conftest import FakeFreezeBackend, PowerRecorder, make_config

from kvmmanager_agent.context import Context
from kvmmanager_agent.dispatcher import Dispatcher, parse
from kvmmanager_agent.methods import HANDLERS


@pytest.fixture
def disp(roots: dict[str, Path]) -> Dispatcher:
    cfg = make_config(roots)
    return Dispatcher(Context(cfg, FakeFreezeBackend(), PowerRecorder()), dict(HANDLERS))


def run(disp: Dispatcher, text: str | bytes) -> Any:
    payload, err = parse(text.encode() if isinstance(text, str) else text)
    if err is not None:
        return err
    return disp.run(payload)[0]


def test_any_valid_id_type_is_echoed(disp: Dispatcher) -> None:
    for req_id in (1, "abc", 2.5, None, -7):
        msg = {"jsonrpc": "2.0", "id": req_id, "method": "ping"}
        reply = run(disp, json.dumps(msg))
        assert reply["id"] == req_id and reply["result"]["pong"] is True


def test_invalid_ids_and_requests(disp: Dispatcher) -> None:
    for bad in (
        '{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}',
        '{"jsonrpc":"2.0","id":[1],"method":"ping"}',
        '{"jsonrpc":"2.0","id":true,"method":"ping"}',
        '{"jsonrpc":"1.0","id":1,"method":"ping"}',
        '{"jsonrpc":"2.0","id":1,"method":5}',
        '{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}',
        "42",
        '"ping"',
    ):
        reply = run(disp, bad)
        assert reply["error"]["code"] == -32600, bad


def test_parse_errors(disp: Dispatcher) -> None:
    for bad in (b"{", b"\xc3\x28", b"nul", b"[" * 100000 + b"]" * 100000):
        reply = run(disp, bad)
        assert reply["error"]["code"] == -32700
        assert reply["id"] is None


def test_notifications_get_no_reply_even_on_error(disp: Dispatcher) -> None:
    assert run(disp, '{"jsonrpc":"2.0","method":"ping"}') is None
    assert run(disp, '{"jsonrpc":"2.0","method":"no_such"}') is None
    assert run(disp, '{"jsonrpc":"2.0","method":"file_read","params":{}}') is None


def test_batches(disp: Dispatcher) -> None:
    reply = run(
        disp,
        json.dumps(
            [
                {"jsonrpc": "2.0", "id": 1, "method": "ping"},
                {"jsonrpc": "2.0", "method": "ping"},
                {"jsonrpc": "2.0", "id": 2, "method": "nope"},
                1,
            ]
        ),
    )
    assert isinstance(reply, list) and len(reply) == 3
    assert reply[0]["result"]["pong"] is True
    assert reply[1]["error"]["code"] == -32601
    assert reply[2]["error"]["code"] == -32600 and reply[2]["id"] is None
    assert run(disp, "[]")["error"]["code"] == -32600
    assert run(disp, '[{"jsonrpc":"2.0","method":"ping"}]') is None
    too_many = [{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(65)]
    assert run(disp, json.dumps(too_many))["error"]["code"] == -32600


def test_method_not_found_and_invalid_params(disp: Dispatcher) -> None:
    reply = run(disp, '{"jsonrpc":"2.0","id":1,"method":"rm_rf"}')
    assert reply["error"]["code"] == -32601
    reply = run(disp, '{"jsonrpc":"2.0","id":1,"method":"file_read","params":{"path":1}}')
    assert reply["error"]["code"] == -32602
    assert reply["error"]["data"]["field"] == "path"
    reply = run(disp, '{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":1}}')
    assert reply["error"]["code"] == -32602


def test_internal_error_is_contained(disp: Dispatcher) -> None:
    def boom(ctx: Any, params: Any) -> Any:
        raise RuntimeError("bug")

    disp.handlers["ping"] = boom
    reply = run(disp, '{"jsonrpc":"2.0","id":1,"method":"ping"}')
    assert reply["error"]["code"] == -32603


def test_disabled_method_is_not_found_and_not_a_capability(roots: dict[str, Path]) -> None:
    cfg = make_config(roots, disabled_methods=["set_time"], security={"command_whitelist": []})
    disp = Dispatcher(Context(cfg, FakeFreezeBackend(), PowerRecorder()), dict(HANDLERS))
    reply = run(disp, '{"jsonrpc":"2.0","id":1,"method":"set_time","params":{"timestamp":1}}')
    assert reply["error"]["code"] == -32601
    info = run(disp, '{"jsonrpc":"2.0","id":1,"method":"get_agent_info"}')["result"]
    assert "set_time" not in info["capabilities"]
    # An empty whitelist disables exec entirely.
    assert "exec_command" not in info["capabilities"]
    reply = run(disp, '{"jsonrpc":"2.0","id":1,"method":"exec_command","params":{"command":"ls"}}')
    assert reply["error"]["code"] == -32601


def test_protocol_version_negotiation(disp: Dispatcher) -> None:
    def info(v: int) -> Any:
        msg = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "get_agent_info",
            "params": {"protocol_version": v},
        }
        return run(disp, json.dumps(msg))

    assert info(1)["result"]["negotiated_protocol_version"] == 1
    assert info(99)["result"]["negotiated_protocol_version"] == 2
    # The original protocol's field keeps its type and meaning: a version string.
    assert info(1)["result"]["protocol_version"] == "1.0.0"
    assert info(0)["error"]["code"] == -32602
