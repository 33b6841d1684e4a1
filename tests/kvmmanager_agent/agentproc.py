"""The shipped agent as a separate process, the way a guest runs it.

The zipapp is built by the ISO builder's own function and started by the command line
of the shipped systemd unit (its ExecStart), with each CPython 3.8+ found on this
machine in place of /usr/bin/python3. Its virtio-serial port is a pty in raw mode,
named by `--device`: bytes pass untouched both ways, as over a virtio port. The tests
talk to the pty's master end.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import itertools
import json
import os
import pty
import re
import select
import shlex
import subprocess
import time
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvmmanager.iso.zipapp import build_agent_zipapp

REPO = Path(__file__).resolve().parents[2]
SERVICE_FILE = REPO / "packaging" / "agent" / "kvmmanager-agent.service"
SHIPPED_CONFIG = REPO / "packaging" / "agent" / "config.json"
START_TIMEOUT = 120.0  # the first start unpacks and compiles the bytecode cache
REPLY_TIMEOUT = 30.0
MIN_VERSIONS = 3


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: tuple[int, int]
    full_version: str

    @property
    def label(self) -> str:
        return f"cpython{self.full_version}:{self.path}"


def _candidates() -> list[str]:
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = glob.glob(os.path.join(pyenv, "versions", "*", "bin", "python"))
    for pattern in ("/usr/bin/python3*", "/usr/local/bin/python3*"):
        found += [p for p in glob.glob(pattern) if re.search(r"/python3(\.\d+)?$", p)]
    return sorted(found)


_PROBE = "import sys, platform; print(sys.implementation.name, platform.python_version())"


@functools.cache
def interpreters() -> tuple[Interpreter, ...]:
    """Every CPython >= 3.8 on this machine (pyenv's and the system's), one per binary."""
    out: list[Interpreter] = []
    seen: set[str] = set()
    for path in _candidates():
        real = os.path.realpath(path)
        if real in seen or not os.access(real, os.X_OK):
            continue
        seen.add(real)
        try:
            probe = subprocess.run(
                [path, "-I", "-S", "-c", _PROBE], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        words = probe.stdout.split()
        if probe.returncode != 0 or len(words) != 2 or words[0] != "cpython":
            continue
        major, minor = (int(x) for x in words[1].split(".")[:2])
        if (major, minor) >= (3, 8):
            out.append(Interpreter(path, (major, minor), words[1]))
    return tuple(out)


def launch_argv(python: str, pyz: Path, config: Path, device: str) -> list[str]:
    """The shipped unit's ExecStart, with this interpreter, zipapp, config and port."""
    text = SERVICE_FILE.read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    # The shape the substitutions rely on: interpreter, zipapp, --config FILE.
    assert argv[0] == "/usr/bin/python3" and argv[1].endswith(".pyz"), argv
    assert argv[2:] == ["--config", "/etc/kvmmanager-agent/config.json"], argv
    return [python, str(pyz), "--config", str(config), "--device", device]


def build_pyz(directory: Path) -> Path:
    """The zipapp exactly as the ISO builder makes it."""
    return build_agent_zipapp(directory / "kvmmanager-agent.pyz")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259)")


def strict_json(line: bytes) -> Any:
    """Parse one reply line as RFC 8259 JSON: UTF-8, no NaN/Infinity."""
    return json.loads(line.decode("utf-8"), parse_constant=_no_constants)


class AgentProcess:
    """One agent process on one interpreter, and the host end of its pty port."""

    def __init__(
        self,
        python: Interpreter,
        pyz: Path,
        workdir: Path,
        config: dict[str, Any] | None = None,
        config_text: str | None = None,
    ) -> None:
        self.python = python
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)  # no echo, no line editing, no CR/LF mapping: a byte pipe
        os.set_blocking(self.master, False)
        self.device = os.ttyname(self.slave)
        self.config_path = workdir / "config.json"
        if config_text is None:
            config_text = json.dumps(config if config is not None else {})
        self.config_path.write_text(config_text)
        self.log_path = workdir / "agent.log"
        self.buf = bytearray()
        self.ids = itertools.count(1)
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "KVMMANAGER_AGENT_CACHE": str(workdir / "cache"),
        }
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                launch_argv(python.path, pyz, self.config_path, self.device),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd="/",
                start_new_session=True,
            )
        self.pid = self.proc.pid

    # -- bytes ----------------------------------------------------------------
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def _pump(self, timeout: float) -> bool:
        """Read what the agent wrote within `timeout`; True when something came."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.master, 1 << 20)
        except BlockingIOError:
            return False
        self.buf += data
        return bool(data)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + REPLY_TIMEOUT
        while view:
            # Replies are read meanwhile: an agent blocked writing would stop reading.
            readable, writable, _ = select.select([self.master], [self.master], [], 1.0)
            if readable:
                self._pump(0)
            if not writable:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError(f"the agent stopped reading its port\n{self.log()}")
                continue
            try:
                view = view[os.write(self.master, view[: 1 << 16]) :]
            except BlockingIOError:
                continue

    def line(self, timeout: float = REPLY_TIMEOUT) -> bytes:
        """The next line the agent wrote (without its newline), a 0xFF prefix kept."""
        waited = 0.0
        while b"\n" not in self.buf:
            if self.proc.poll() is not None:
                raise AssertionError(f"the agent exited ({self.proc.returncode})\n{self.log()}")
            if not self._pump(0.5):
                waited += 0.5
                if waited >= timeout:
                    raise AssertionError(f"no reply within {timeout} s\n{self.log()}")
        idx = self.buf.index(b"\n")
        out = bytes(self.buf[:idx])
        del self.buf[: idx + 1]
        return out

    def reply(self, timeout: float = REPLY_TIMEOUT) -> Any:
        line = self.line(timeout)
        assert not line.startswith(b"\xff"), line[:200]
        return strict_json(line)

    def quiet(self, seconds: float) -> bytes:
        """Whatever arrives within `seconds` (a bounded wait for replies that must not come)."""
        self._pump(seconds)
        while self._pump(0):
            pass
        out = bytes(self.buf)
        del self.buf[:]
        return out

    # -- requests -------------------------------------------------------------
    def request(self, method: str, params: Any = None, req_id: Any = None) -> bytes:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        msg["id"] = next(self.ids) if req_id is None else req_id
        return json.dumps(msg).encode() + b"\n"

    def call(self, method: str, params: Any = None, timeout: float = REPLY_TIMEOUT) -> Any:
        req_id = f"call-{next(self.ids)}"
        self.send(self.request(method, params, req_id))
        reply = self.reply(timeout)
        assert reply.get("id") == req_id, reply
        return reply

    def wait_ready(self) -> None:
        reply = self.call("ping", timeout=START_TIMEOUT)
        assert reply["result"]["pong"] is True, reply

    def assert_alive(self) -> None:
        """Same process (same pid, still running) and it answers a ping, nothing before it."""
        assert self.proc.poll() is None, f"the agent exited\n{self.log()}"
        assert self.proc.pid == self.pid
        reply = self.call("ping")
        assert reply["result"]["pong"] is True, reply

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
