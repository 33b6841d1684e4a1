"""exec_command / exec_start / exec_poll: whitelist, output, timeouts killing the group."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

from tests.kvmmanager_agent.conftest import Raw


def test_exec_returns_exit_code_and_output(raw: Raw, roots: dict[str, Path]) -> None:
    reply = raw.call(
        "exec_command",
        {"command": "sh", "args": ["-c", "echo out; echo err >&2; pwd; exit 3"],
         "working_directory": str(roots["write"])},
    )["result"]  # fmt: skip
    assert reply["exit_code"] == 3
    assert reply["stdout"] == f"out\n{roots['write']}\n"
    assert reply["stderr"] == "err\n"
    assert reply["execution_time_ms"] >= 0 and reply["truncated"] is False


def test_no_shell_interpretation(raw: Raw) -> None:
    reply = raw.call("exec_command", {"command": "echo", "args": ["$HOME", ";", "rm", "-rf"]})
    assert reply["result"]["stdout"] == "$HOME ; rm -rf\n"


def test_exec_input_and_no_capture(raw: Raw) -> None:
    reply = raw.call("exec_command", {"command": "cat", "input": "fed\n"})
    assert reply["result"]["stdout"] == "fed\n"
    reply = raw.call("exec_command", {"command": "echo", "args": ["x"], "capture_output": False})
    assert reply["result"]["stdout"] == ""


def test_command_not_whitelisted(raw: Raw) -> None:
    for cmd in ("rm", "/bin/rm", "bash"):
        reply = raw.call("exec_command", {"command": cmd, "args": ["-rf", "/nonexistent"]})
        assert reply["error"]["code"] == -32001, cmd
        assert reply["error"]["data"]["field"] == "command"


def test_bad_working_directory(raw: Raw) -> None:
    reply = raw.call("exec_command", {"command": "true", "working_directory": "/nonexistent"})
    assert reply["error"]["code"] == -32602


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_timeout_kills_the_whole_process_group(raw: Raw, roots: dict[str, Path]) -> None:
    pidfile = roots["write"] / "child.pid"
    reply = raw.call(
        "exec_command",
        {"command": "sh", "args": ["-c", f"sleep 300 & echo $! > {pidfile}; wait"],
         "timeout_seconds": 1},
    )  # fmt: skip
    assert reply["error"]["code"] == -32003
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_streaming_exec(raw: Raw) -> None:
    start = raw.call(
        "exec_start", {"command": "sh", "args": ["-c", "echo one; sleep 0.3; echo two >&2; exit 4"]}
    )["result"]
    out, err = b"", b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        poll = raw.call("exec_poll", {"handle": start["handle"], "wait_seconds": 2})["result"]
        out += base64.b64decode(poll["stdout"])
        err += base64.b64decode(poll["stderr"])
        if poll["exited"]:
            break
    assert (out, err, poll["exit_code"]) == (b"one\n", b"two\n", 4)
    # The handle is released once the exit was reported.
    assert raw.call("exec_poll", {"handle": start["handle"]})["error"]["code"] == -32002


def test_streaming_exec_timeout(raw: Raw) -> None:
    start = raw.call("exec_start", {"command": "sleep", "args": ["100"], "timeout_seconds": 0.5})
    handle = start["result"]["handle"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        poll = raw.call("exec_poll", {"handle": handle, "wait_seconds": 2})["result"]
        if poll["exited"]:
            break
    assert poll["timed_out"] is True and poll["exit_code"] == -9
    assert os.getpgid(0) != start["result"]["pid"]
