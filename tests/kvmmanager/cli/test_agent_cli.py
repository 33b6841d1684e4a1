"""`kvm-manager agent ...` against a live server; the real agent on a unix socket stands in
for the test driver VM's channel."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kvmmanager.agent.transports import UnixTransport

_path = Path(__file__).parents[2] / "kvmmanager_agent" / "conftest.py"
_spec = importlib.util.spec_from_file_location("kvmm_t_agent_fixtures_cli", _path)
assert _spec is not None and _spec.loader is not None
_fx = importlib.util.module_from_spec(_spec)
sys.modules["kvmm_t_agent_fixtures_cli"] = _fx
_spec.loader.exec_module(_fx)
roots = _fx.roots
start_agent = _fx.start_agent
agent = _fx.agent


@pytest.fixture
def acli(cli: Any, live_server: Any, agent: Any) -> Any:
    manager = live_server.manager
    host = manager.registry.get("local")
    deadline = time.monotonic() + 30
    while not host.connected:
        assert time.monotonic() < deadline, "local host did not connect"
        time.sleep(0.02)
    info = manager.inventory.domain("local", "test")
    manager.inventory.put_domain(dataclasses.replace(info, agent_status="connected"))

    async def opener(host_name: str, uuid: str) -> Any:
        return await UnixTransport.open(agent.path)

    manager.agents._opener = opener
    return cli


def _json(result: Any) -> Any:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def test_facts(acli: Any) -> None:
    assert _json(acli("--json", "agent", "ping", "test"))["pong"] is True
    assert _json(acli("--json", "agent", "info", "test"))["source"] == "kvmm"
    assert _json(acli("--json", "agent", "system", "test"))["os_type"] == "linux"
    table = acli("agent", "network", "test")
    assert table.exit_code == 0 and "127.0.0.1/8" in table.stdout
    assert acli("agent", "disks", "test").exit_code == 0
    assert _json(acli("--json", "agent", "status", "test"))["agent_status"] == "connected"
    assert _json(acli("--json", "agent", "call", "test", "get_time"))["timestamp"] > 0


def test_exec_streams_and_returns_the_exit_code(acli: Any) -> None:
    r = acli("agent", "exec", "test", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert r.exit_code == 7
    assert r.stdout == "out\n" and "err\n" in r.stderr
    r = acli("agent", "exec", "test", "--wait", "echo", "hi")
    assert (r.exit_code, r.stdout) == (0, "hi\n")
    denied = acli("agent", "exec", "test", "rm", "-rf", "/x")
    assert denied.exit_code == 9 and denied.stderr.startswith("error: ")


def test_cp_both_ways_with_resume(acli: Any, roots: dict[str, Path], tmp_path: Path) -> None:
    data = os.urandom(1_500_000)
    src = tmp_path / "local.bin"
    src.write_bytes(data)
    guest = str(roots["write"] / "copied.bin")
    (roots["write"] / "copied.bin").write_bytes(data[:600_000])  # an interrupted upload
    up = _json(acli("--json", "agent", "cp", str(src), f"test:{guest}", "--resume"))
    assert up["sha256"] == hashlib.sha256(data).hexdigest()
    back = tmp_path / "back.bin"
    down = _json(acli("--json", "agent", "cp", f"test:{guest}", str(back)))
    assert back.read_bytes() == data and down["sha256"] == up["sha256"]
    bad = acli("agent", "cp", str(src), str(back))
    assert bad.exit_code == 2 and "VM:/" in bad.stderr


def test_cp_error_is_one_line_on_stderr(cli: Any, live_server: Any, tmp_path: Path) -> None:
    # Issue 17's try: a refused copy printed an empty line (the progress bar's) first.
    host = live_server.manager.registry.get("local")
    deadline = time.monotonic() + 30
    while not host.connected:
        assert time.monotonic() < deadline, "local host did not connect"
        time.sleep(0.02)
    out = tmp_path / "out"
    out.mkdir()
    src = out / "local.txt"
    src.write_text("kvmm")
    for args in ([str(src), "test:/tmp/kvmm-t-cp.txt"], ["test:/tmp/kvmm-t-cp.txt", str(out)]):
        r = cli("agent", "cp", *args)
        assert r.exit_code != 0 and r.stdout == "", (r.stdout, r.stderr)
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert list(out.iterdir()) == [src]  # the refused download made no empty file
