"""Failover of the singleton lease between manager PROCESSES sharing one PostgreSQL
database (issue 16 item 2): the lease holder is killed with SIGKILL while it runs a job
and while a `once` schedule is about to fall due; the other instance takes the lease over
(the fencing token grows by one), runs the schedule that fell due during the failover
exactly once, and fails the dead instance's job with a reason (never left `running`).

The instances are tests/reliability/fleet_instance.py children with a 2 s lease renewed
every 0.2 s; the takeover time is printed as a figure, never asserted (a loaded machine).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine
from tests.postgres_cluster import shared_cluster

import kvmmanager
from kvmmanager.db.fleet_models import Lease
from kvmmanager.db.models import Job
from kvmmanager.db.ops_models import Schedule, ScheduleRun

CHILD = Path(__file__).with_name("fleet_instance.py")
# The children import the code under test, wherever the test run found it.
SRC = Path(kvmmanager.__file__).parents[1]
WAIT = 60.0  # generous bound of every wait: the machine is shared
LEASE_SECONDS = 2.0


class Child:
    """A fleet_instance.py process; its stdout lines are read into a queue by a thread."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, name="kvmm-t-fleet-out", daemon=True).start()
        self.id = self.expect("KVMM-READY")[0]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, tag: str) -> list[str]:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                err = self.proc.stderr.read() if self.proc.poll() is not None else ""
                raise AssertionError(f"no {tag} from the instance: {self.seen} {err}") from None
            self.seen.append(line)
            words = line.split()
            if words and words[0] == tag:
                return words[1:]

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("stop")
                self.proc.wait(60)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()


def instance_env(tmp_path: Path, url: str, index: int, lease: float, beat: float) -> dict[str, str]:
    data_dir = tmp_path / f"instance-{index}"
    env = {**os.environ}
    env.update(
        KVMM_CONFIG=str(tmp_path / "no-config.toml"),
        KVMM_DATA_DIR=str(data_dir),
        KVMM_DATABASE__URL=url,
        KVMM_LIBVIRT__DEFAULT_URI="test:///default",
        KVMM_LIBVIRT__ALLOW_TEST_DRIVER="1",
        KVMM_FLEET__HEARTBEAT_SECONDS=str(beat),
        KVMM_FLEET__LEASE_SECONDS=str(lease),
        PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH", "")])),
    )
    return env


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[str, list[Child]]]:
    url = shared_cluster().new_database()
    children: list[Child] = []
    yield url, children
    for c in children:
        c.stop()


def _until(fn: Any, message: str) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def _lease(engine: Engine) -> tuple[str, int, datetime] | None:
    with engine.connect() as c:
        row = c.execute(select(Lease.holder, Lease.token, Lease.expires_at)).first()
    return None if row is None else (row[0], row[1], row[2])


@pytest.mark.slow
def test_kill_9_of_the_lease_holder_hands_over_runs_the_due_schedule_once_and_fails_its_job(
    fleet: tuple[str, list[Child]], tmp_path: Path
) -> None:
    url, children = fleet
    children.append(Child(instance_env(tmp_path, url, 0, LEASE_SECONDS, 0.2)))
    children.append(Child(instance_env(tmp_path, url, 1, LEASE_SECONDS, 0.2)))
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        by_id = {c.id: c for c in children}
        holder_id, token, _ = _until(lambda: _lease(engine), "nobody took the lease")
        holder = by_id[holder_id]
        (other,) = [c for c in children if c is not holder]

        holder.send("job")
        (job_id,) = holder.expect("KVMM-JOB")
        # Due 2 s from now: after the kill below, while the dead holder's lease still runs.
        due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
        holder.send(f"schedule kvmm-t-fleet-once {due.isoformat()}")
        holder.expect("KVMM-SCHEDULE")
        holder.kill()
        killed_at = datetime.now(UTC)
        t_kill = time.monotonic()
        # The premise: the holder died before the schedule fell due (nothing ran yet).
        assert killed_at < due
        with engine.connect() as c:
            assert c.scalar(select(func.count()).select_from(ScheduleRun)) == 0

        # The other instance takes the lease over, with the next fencing token.
        _until(lambda: (_lease(engine) or ("", 0, None))[0] == other.id, "no takeover")
        takeover = time.monotonic() - t_kill
        assert other.expect("KVMM-LEASE") == ["1"]
        assert _lease(engine)[1] == token + 1  # type: ignore[index]

        # The schedule that fell due during the failover runs, once, on the new holder.
        assert other.expect("KVMM-RUN") == ["kvmm-t-fleet-once", due.isoformat()]

        def finished() -> list[Any]:
            with engine.connect() as c:
                return list(c.execute(select(ScheduleRun.due_at, ScheduleRun.status)))

        runs = _until(lambda: [r for r in finished() if r[1] != "running"], "the run never ended")

        # The dead instance's job: failed with the reason, not left running.
        def job() -> Any:
            with engine.connect() as c:
                return c.execute(select(Job.state, Job.error).where(Job.id == job_id)).first()

        state, error = _until(lambda: (j := job()) and j[0] != "running" and j, "job left running")
        assert state == "failed"
        assert error["code"] == "interrupted"
        # The dead instance is named by its address, never called a restart (M1).
        assert error["message"].startswith("the manager instance running it (http://")
        assert error["message"].endswith(") stopped")

        # Several more beats of the new holder: still exactly one run, the once schedule
        # done (no next run), and the old holder ran nothing.
        time.sleep(5 * 0.2)
        assert finished() == runs and len(runs) == 1 and runs[0][0] == due
        with engine.connect() as c:
            assert c.scalar(select(Schedule.next_run_at)) is None
            running = c.scalar(select(func.count()).select_from(Job).where(Job.state == "running"))
        assert running == 0
        assert not [line for line in holder.seen if line.startswith("KVMM-RUN")]
        print(f"\nKVMM-FIGURES failover takeover {takeover:.2f} s (lease {LEASE_SECONDS} s)")
    finally:
        engine.dispose()
