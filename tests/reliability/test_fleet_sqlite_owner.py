"""SQLite is for one instance (issue 16 item 5): a second `kvm-manager serve` on the same
SQLite file refuses to start, naming the file, the instance that has it and what to do,
instead of running next to it; a first instance killed with SIGKILL does not keep the
file from a restart (the claim is an OS lock that dies with its process, not a row).

Real processes, each with its own port; the two share one KVMM_DATA_DIR on purpose.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import kvmmanager

# The children import the code under test, wherever the test run found it.
SRC = Path(kvmmanager.__file__).parents[1]
WAIT = 90.0  # generous bound of every wait: the machine is shared


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """`kvm-manager serve` as a child process on a given data dir and port."""

    def __init__(self, data_dir: Path, tmp_path: Path) -> None:
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KVMM_")}
        env.update(
            KVMM_CONFIG=str(tmp_path / "no-config.toml"),
            KVMM_DATA_DIR=str(data_dir),
            KVMM_LIBVIRT__DEFAULT_URI="test:///default",
            KVMM_LIBVIRT__ALLOW_TEST_DRIVER="1",
            KVMM_LOG_LEVEL="warning",
            PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
        )
        argv = [sys.executable, "-m", "kvmmanager.cli.main", "serve"]
        self.proc = subprocess.Popen(
            [*argv, "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def healthy(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200
        return False

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + WAIT
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out, err = (
                    self.proc.communicate(timeout=30) if self.proc.poll() is not None else ("", "")
                )
                raise AssertionError(f"serve did not start: {out}{err}")
            time.sleep(0.1)

    def wait_exit(self) -> tuple[int, str]:
        """The exit code and stderr of a process expected to end by itself."""
        deadline = time.monotonic() + WAIT
        while self.proc.poll() is None:
            assert not self.healthy(), "the second instance started serving"
            assert time.monotonic() < deadline, "the second instance neither served nor ended"
            time.sleep(0.1)
        _, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ValueError, OSError):
            self.proc.communicate(timeout=5)


@pytest.fixture
def serves(tmp_path: Path) -> Iterator[list[Serve]]:
    made: list[Serve] = []
    yield made
    for s in made:
        s.stop()


@pytest.mark.slow
def test_a_second_serve_on_one_sqlite_file_refuses_and_a_killed_ones_file_is_free(
    serves: list[Serve], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    database = data_dir / "kvm-manager.db"
    first = Serve(data_dir, tmp_path)
    serves.append(first)
    first.wait_healthy()

    second = Serve(data_dir, tmp_path)
    serves.append(second)
    code, err = second.wait_exit()
    assert code == 5, err  # a Conflict's exit status
    # One clear message: the file, who has it, and what to do instead.
    assert "Traceback" not in err, err
    assert str(database) in err, err
    assert f"pid {first.proc.pid}" in err and socket.gethostname() in err, err
    assert first.url in err, err
    assert "PostgreSQL" in err and "KVMM_DATA_DIR" in err, err
    # The first one serves on, alone.
    assert first.healthy()

    # kill -9 leaves the lock file behind but not its lock: a restart starts at once.
    first.kill()
    third = Serve(data_dir, tmp_path)
    serves.append(third)
    third.wait_healthy()
