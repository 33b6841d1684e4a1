from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kvmmanager_agent import protocol
from kvmmanager_agent.methods import HANDLERS

ROOT = Path(__file__).parents[2]

ORIGINAL_RESULT_FIELDS = {
    "ping": {"pong", "timestamp"},
    "get_agent_info": {"version", "protocol_version", "platform", "capabilities"},
    "get_system_info": {
        "os_type", "os_name", "os_version", "kernel_version", "hostname", "architecture",
        "cpu_count", "total_memory_kb", "uptime_seconds",
    },
    "exec_command": {"exit_code", "stdout", "stderr", "execution_time_ms"},
    "file_read": {"content", "size_bytes", "encoding"},
    "file_write": {"bytes_written", "path"},
    "shutdown": {"initiated", "message"},
    "reboot": {"initiated", "message"},
}  # fmt: skip


def test_every_method_has_a_handler_and_back() -> None:
    assert set(HANDLERS) == set(protocol.METHODS)
    for name in protocol.METHODS:
        assert callable(HANDLERS[name]), name


def test_original_ten_methods_and_their_fields_are_declared() -> None:
    for name in (
        "ping", "get_agent_info", "get_system_info", "get_network_info", "exec_command",
        "file_read", "file_write", "shutdown", "reboot", "get_disk_usage",
    ):  # fmt: skip
        assert name in protocol.METHODS
    for name, fields in ORIGINAL_RESULT_FIELDS.items():
        declared = {f for f, _ in protocol.METHODS[name].result}
        assert fields <= declared, name
    exec_params = [p.name for p in protocol.METHODS["exec_command"].params]
    assert exec_params[:5] == [
        "command", "args", "timeout_seconds", "capture_output", "working_directory",
    ]  # fmt: skip


def test_error_codes() -> None:
    assert set(protocol.ERROR_CODES) >= {
        -32700, -32600, -32601, -32602, -32603, -32000, -32001, -32002, -32003,
    }  # fmt: skip


def test_validate_params_fills_defaults_and_names_the_field() -> None:
    m = protocol.METHODS["file_read"]
    assert protocol.validate_params(m, {"path": "/x"}) == {"path": "/x", "encoding": "utf8"}
    assert protocol.validate_params(m, ["/x", "base64"])["encoding"] == "base64"
    cases = [
        ({}, "path"),
        ({"path": 3}, "path"),
        ({"path": "/x", "encoding": "latin1"}, "encoding"),
        ({"path": "/x", "bogus": 1}, "bogus"),
        ({"path": ""}, "path"),
    ]
    for params, field in cases:
        with pytest.raises(protocol.ParamError) as exc:
            protocol.validate_params(m, params)
        assert exc.value.field == field
    ping = protocol.METHODS["sync"]
    with pytest.raises(protocol.ParamError):
        protocol.validate_params(ping, {"nonce": True})  # a bool is not an integer
    with pytest.raises(protocol.ParamError):
        protocol.validate_params(ping, {"nonce": -1})


def test_protocol_md_is_generated_from_the_registry() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kvmmanager_agent.protocol", "--markdown"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    committed = (ROOT / "docs" / "protocol.md").read_text()
    assert committed == out, "regenerate: python -m kvmmanager_agent.protocol --markdown"


def test_agent_is_python38_compatible() -> None:
    vermin = Path(sys.executable).parent / "vermin"
    proc = subprocess.run(
        [str(vermin), "-t=3.8-", "--no-tips", "--violations", str(ROOT / "src/kvmmanager_agent")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_agent_imports_nothing_from_kvmmanager() -> None:
    for path in (ROOT / "src/kvmmanager_agent").rglob("*.py"):
        text = path.read_text()
        assert "import kvmmanager." not in text and "from kvmmanager." not in text, path
        assert "from kvmmanager import" not in text, path
