"""The SysV init script restarts the agent after a crash, and `stop` really stops it.

The script runs as shipped (under dash and busybox sh, the /bin/sh of Debian and of
small guests) against a temporary root holding the built zipapp and a config; the
agent it starts is a real process, killed with SIGKILL as a crash would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kvmmanager.iso.zipapp import build_agent_zipapp

SCRIPT = Path(__file__).resolve().parents[2] / "packaging" / "agent" / "kvmmanager-agent.sysv"
SHELLS = sorted(
    {
        os.path.realpath(s)
        for s in ("/bin/dash", "/usr/bin/dash", "/bin/busybox", "/usr/bin/busybox")
        if os.path.exists(s)
    }
)
WAIT = 30.0


def _shell_argv(shell: str) -> list[str]:
    return [shell, "sh"] if shell.endswith("busybox") else [shell]


@dataclass
class Guest:
    root: Path
    shell: str
    env: dict[str, str]

    def init(self, action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_shell_argv(self.shell), str(SCRIPT), action],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def supervisor(self) -> int:
        return int((self.root / "var/run/kvmmanager-agent.pid").read_text())


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The fields after the command name, which is in parentheses and may hold spaces.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return out


def agent_of(guest: Guest) -> int:
    """The agent the supervisor runs now (bounded wait for it to be (re)started)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for pid in children(guest.supervisor()):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"kvmmanager" in cmdline and b"--config" in cmdline:
                return pid
        time.sleep(0.1)
    raise AssertionError("no agent under the supervisor\n" + log_of(guest))


def log_of(guest: Guest) -> str:
    path = guest.root / "var/log/kvmmanager-agent.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(params=SHELLS, ids=[Path(s).name for s in SHELLS])
def guest(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Guest]:
    root = tmp_path / "root"
    for d in ("usr/lib/kvmmanager-agent", "etc/kvmmanager-agent", "var/run", "var/log"):
        (root / d).mkdir(parents=True)
    build_agent_zipapp(root / "usr/lib/kvmmanager-agent/kvmmanager-agent.pyz")
    # No virtio port here: the agent waits for it, as in a guest without the channel.
    (root / "etc/kvmmanager-agent/config.json").write_text(
        json.dumps({"channel_name": f"kvmm-test-absent-{os.getpid()}"})
    )
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "KVMM_ROOT": str(root),
        "KVMMANAGER_AGENT_CACHE": str(tmp_path / "cache"),
    }
    g = Guest(root, request.param, env)
    yield g
    if g.init("status").returncode == 0:
        g.init("stop")
    pidfile = root / "var/run/kvmmanager-agent.pid"
    if pidfile.exists():  # the test failed half-way: leave nothing running
        sup = int(pidfile.read_text())
        for pid in [*children(sup), sup]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_crashed_agent_is_started_again(guest: Guest) -> None:
    assert shutil.which("python3", path=guest.env["PATH"])
    started = guest.init("start")
    assert started.returncode == 0 and "started" in started.stdout, started
    first = agent_of(guest)
    assert guest.init("status").returncode == 0
    os.kill(first, signal.SIGKILL)  # a crash: nothing the agent can catch
    deadline = time.monotonic() + WAIT
    second = first
    while second == first and time.monotonic() < deadline:
        second = agent_of(guest)
        time.sleep(0.1)
    assert second != first and alive(second), log_of(guest)
    assert "exited with status 137; restarting" in log_of(guest)
    assert guest.init("status").returncode == 0


def test_stop_ends_the_agent_and_its_supervisor(guest: Guest) -> None:
    assert guest.init("start").returncode == 0
    agent = agent_of(guest)
    supervisor = guest.supervisor()
    stopped = guest.init("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped
    assert not alive(agent) and not alive(supervisor)
    status = guest.init("status")
    assert status.returncode == 3 and "not running" in status.stdout
    # A clean stop is not a crash: nothing was restarted.
    assert "restarting" not in log_of(guest)


def test_restart_gives_a_new_agent(guest: Guest) -> None:
    assert guest.init("start").returncode == 0
    first = agent_of(guest)
    assert guest.init("restart").returncode == 0
    second = agent_of(guest)
    assert second != first and not alive(first)


def test_start_after_the_package_was_removed_starts_nothing(guest: Guest) -> None:
    """`apt-get remove` keeps the init script (a conffile) and its runlevel links but
    removes the zipapp: a boot then must not run a supervisor that restarts a missing
    agent every two seconds forever."""
    (guest.root / "usr/lib/kvmmanager-agent/kvmmanager-agent.pyz").unlink()
    res = guest.init("start")
    assert res.returncode == 0, res.stderr
    assert not (guest.root / "var/run/kvmmanager-agent.pid").exists()
    assert guest.init("status").returncode == 3
