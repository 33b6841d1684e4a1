"""fsfreeze with a fake backend (real FIFREEZE needs root on a real block filesystem; the
VM suite covers it): ordering, refusal while frozen, and the automatic thaw."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.kvmmanager_agent.conftest import FakeFreezeBackend, Raw, RunningAgent


def test_freeze_refuses_writes_then_thaws(
    start_agent: Callable[..., RunningAgent], roots: dict[str, Path]
) -> None:
    backend = FakeFreezeBackend(["/", "/var", "/var/lib"])
    running = start_agent(freeze=backend)
    raw = Raw(running.path)
    r = raw.call("fsfreeze_freeze", {"timeout_seconds": 60})["result"]
    assert r["frozen"] == 3 and r["mount_points"] == ["/var/lib", "/var", "/"]  # deepest first
    assert raw.call("fsfreeze_status")["result"]["status"] == "frozen"
    reply = raw.call("file_write", {"path": str(roots["write"] / "x"), "content": "x"})
    assert reply["error"]["code"] == -32001 and "frozen" in reply["error"]["message"]
    assert raw.call("exec_command", {"command": "true"})["error"]["code"] == -32001
    # Facts stay available while frozen.
    assert raw.call("ping")["result"]["pong"] is True
    assert raw.call("fsfreeze_freeze")["error"]["code"] == -32000  # already frozen
    thawed = raw.call("fsfreeze_thaw")["result"]
    assert thawed == {"thawed": 3, "mount_points": ["/", "/var", "/var/lib"]}
    assert backend.frozen == set()
    assert raw.call("file_write", {"path": str(roots["write"] / "x"), "content": "x"})["result"]
    raw.close()


def test_automatic_thaw_after_timeout(start_agent: Callable[..., RunningAgent]) -> None:
    backend = FakeFreezeBackend(["/"])
    # The agent's cap (1 s) wins over the host's request (3600 s).
    running = start_agent(freeze=backend, freeze_timeout_seconds=1)
    raw = Raw(running.path)
    r = raw.call("fsfreeze_freeze", {"timeout_seconds": 3600})["result"]
    assert r["thaw_deadline"] - time.time() <= 1.5
    deadline = time.monotonic() + 30
    while backend.frozen and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.frozen == set()
    assert raw.call("fsfreeze_status")["result"] == {
        "status": "thawed", "mount_points": [], "thaw_deadline": None,
    }  # fmt: skip
    raw.close()


def test_unknown_mount_point(raw: Raw) -> None:
    reply = raw.call("fsfreeze_freeze", {"mount_points": ["/nope"]})
    assert reply["error"]["data"]["field"] == "mount_points"


def test_agent_exit_thaws(start_agent: Callable[..., RunningAgent]) -> None:
    backend = FakeFreezeBackend(["/"])
    running = start_agent(freeze=backend)
    raw = Raw(running.path)
    raw.call("fsfreeze_freeze")
    raw.close()
    running.agent.stop()
    running.thread.join(10)
    running.agent.drain(1)
    assert backend.frozen == set()
