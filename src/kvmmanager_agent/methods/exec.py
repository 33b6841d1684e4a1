"""exec_command, exec_start, exec_poll: allowed commands, no shell, bounded output.

Each command runs in its own session (process group); on timeout the whole group gets
SIGKILL, so children a command spawned die with it.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import threading
import time

from .. import protocol
from ..errors import AgentError, denied, failed, invalid, not_found

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional


MAX_RUNNING = 16


def resolve_command(whitelist: Optional[List[str]], command: str) -> str:
    path = command if "/" in command else shutil.which(command)
    if whitelist is None:  # null in the config: every command, as the original protocol
        if path is None or not os.path.isfile(path):
            raise not_found("command %r not found" % command[:200], "command")
        return path
    if not whitelist:
        raise denied("exec is disabled (security.command_whitelist is empty)", "command")
    allowed = set(whitelist)
    for entry in whitelist:
        if "/" not in entry:
            found = shutil.which(entry)
            if found:
                allowed.add(found)
    if command not in allowed and (path is None or path not in allowed):
        raise denied("command %r is not in security.command_whitelist" % command[:200], "command")
    if path is None or not os.path.isfile(path):
        raise not_found("command %r not found" % command[:200], "command")
    return path


def _check_env(env: Optional[Dict[str, Any]]) -> Dict[str, str]:
    merged = dict(os.environ)
    for key, value in (env or {}).items():
        if not isinstance(value, str) or not key or "=" in key or "\x00" in key + value:
            raise invalid("env entries must be NAME -> string", "env")
        merged[key] = value
    return merged


class Proc:
    """A running command with capped output buffers and a watchdog for its timeout."""

    def __init__(
        self,
        argv: List[str],
        cwd: Optional[str],
        env: Dict[str, str],
        timeout: float,
        stdin_data: Optional[bytes] = None,
        cap: int = protocol.MAX_EXEC_OUTPUT_BYTES,
    ) -> None:
        self.cap = cap
        self.cond = threading.Condition()
        self.out = {"stdout": bytearray(), "stderr": bytearray()}
        self.truncated = False
        self.timed_out = False
        self.exit_code: Optional[int] = None
        self.started = time.monotonic()
        self.finished_at: Optional[float] = None
        try:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                close_fds=True,
                start_new_session=True,
            )
        except OSError as exc:
            raise failed("cannot start %s: %s" % (argv[0], exc.strerror), "command") from None
        self.readers = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, "stderr"), daemon=True),
        ]
        for t in self.readers:
            t.start()
        if stdin_data is not None:
            threading.Thread(target=self._feed, args=(stdin_data,), daemon=True).start()
        self.waiter = threading.Thread(target=self._wait, args=(timeout,), daemon=True)
        self.waiter.start()

    def _feed(self, data: bytes) -> None:
        stdin = self.popen.stdin
        assert stdin is not None  # started with stdin=PIPE whenever there is data to feed
        try:
            stdin.write(data)
            stdin.close()
        except OSError:
            pass

    def _pump(self, stream: Any, name: str) -> None:
        while True:
            try:
                chunk = os.read(stream.fileno(), 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            with self.cond:
                buf = self.out[name]
                room = self.cap - len(buf)
                if room < len(chunk):
                    self.truncated = True
                buf.extend(chunk[: max(room, 0)])
                self.cond.notify_all()
        stream.close()

    def kill_group(self) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def _wait(self, timeout: float) -> None:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.timed_out = True
            self.kill_group()
            code = self.popen.wait()
        for t in self.readers:
            t.join(2.0)
        if any(t.is_alive() for t in self.readers):
            # Leftover children of the group still hold the pipes open.
            self.kill_group()
        with self.cond:
            self.exit_code = code
            self.finished_at = time.monotonic()
            self.cond.notify_all()

    def take(self, name: str) -> bytes:
        buf = self.out[name]
        data = bytes(buf)
        del buf[:]
        return data


def _start(ctx: Any, params: Dict[str, Any], stdin: Optional[bytes]) -> Proc:
    path = resolve_command(ctx.config.command_whitelist, params["command"])
    args = params["args"]
    if not all(isinstance(a, str) and "\x00" not in a for a in args):
        raise invalid("args must be strings without NUL bytes", "args")
    cwd = params["working_directory"]
    if cwd is not None and (not cwd.startswith("/") or not os.path.isdir(cwd)):
        raise invalid(
            "working_directory must be an existing absolute directory", "working_directory"
        )
    timeout = min(float(params["timeout_seconds"]), ctx.config.max_command_timeout_seconds)
    return Proc([path, *args], cwd, _check_env(params["env"]), timeout, stdin)


def exec_command(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    text = params["input"]
    proc = _start(ctx, params, text.encode("utf-8") if text is not None else None)
    proc.waiter.join()
    if proc.timed_out:
        raise AgentError(
            protocol.TIMEOUT,
            "command timed out; its process group was killed",
            "timeout_seconds",
        )
    capture = params["capture_output"]
    return {
        "exit_code": proc.exit_code,
        "stdout": proc.take("stdout").decode("utf-8", "replace") if capture else "",
        "stderr": proc.take("stderr").decode("utf-8", "replace") if capture else "",
        "execution_time_ms": int(((proc.finished_at or proc.started) - proc.started) * 1000),
        "truncated": proc.truncated,
    }


class ExecTable:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.procs: Dict[int, Proc] = {}
        self.ids = itertools.count(1)

    def add(self, proc: Proc) -> int:
        with self.lock:
            # Forget finished commands nobody polled for ten minutes.
            now = time.monotonic()
            for h, p in list(self.procs.items()):
                if p.finished_at is not None and now - p.finished_at > 600:
                    del self.procs[h]
            if len(self.procs) >= MAX_RUNNING:
                proc.kill_group()
                raise AgentError(protocol.BUSY, "too many background commands", "command")
            handle = next(self.ids)
            self.procs[handle] = proc
            return handle

    def get(self, handle: int) -> Proc:
        with self.lock:
            proc = self.procs.get(handle)
        if proc is None:
            raise not_found("no command with handle %d" % handle, "handle")
        return proc

    def release(self, handle: int) -> None:
        with self.lock:
            self.procs.pop(handle, None)


def exec_start(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    proc = _start(ctx, params, None)
    return {"handle": ctx.execs.add(proc), "pid": proc.popen.pid}


def exec_poll(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    proc = ctx.execs.get(params["handle"])
    deadline = time.monotonic() + params["wait_seconds"]
    with proc.cond:
        while (
            proc.exit_code is None
            and not proc.out["stdout"]
            and not proc.out["stderr"]
            and time.monotonic() < deadline
        ):
            proc.cond.wait(deadline - time.monotonic())
        exited = proc.exit_code is not None
        out, err = proc.take("stdout"), proc.take("stderr")
    if exited:
        ctx.execs.release(params["handle"])
    return {
        "stdout": base64.b64encode(out).decode("ascii"),
        "stderr": base64.b64encode(err).decode("ascii"),
        "exited": exited,
        "exit_code": proc.exit_code,
        "timed_out": proc.timed_out,
        "truncated": proc.truncated,
    }


HANDLERS = {"exec_command": exec_command, "exec_start": exec_start, "exec_poll": exec_poll}
