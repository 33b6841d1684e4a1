"""A SQLite file is claimed by one manager process (db/sqlite_owner.py): another process's
claim is refused naming the owner; the owner's death (SIGKILL) frees the file; Managers of
one process share the claim. Two `kvm-manager serve` processes:
tests/reliability/test_fleet_sqlite_owner.py."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import kvmmanager
from kvmmanager.core.config import Settings
from kvmmanager.db import sqlite_owner
from kvmmanager.db.base import make_engine
from kvmmanager.services.manager import Manager

SRC = Path(kvmmanager.__file__).parents[1]
CHILD = """
import sys
from kvmmanager.db import sqlite_owner
from kvmmanager.db.base import make_engine
sqlite_owner.claim(make_engine(sys.argv[1]), "http://127.0.0.1:1/kvmm-t-owner")
print("claimed", flush=True)
sys.stdin.read()
"""


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def _other_process_claims(url: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, url],
        env=_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "claimed"
    return proc


def test_another_processs_claim_is_refused_by_name_until_it_is_killed(tmp_path: Path) -> None:
    database = tmp_path / "kvm-manager.db"
    url = f"sqlite:///{database}"
    other = _other_process_claims(url)
    try:
        engine = make_engine(url)
        with pytest.raises(sqlite_owner.DatabaseInUse) as refused:
            sqlite_owner.claim(engine, "http://127.0.0.1:2")
        said = refused.value.message
        assert str(database) in said
        assert f"pid {other.pid} on " in said and "serving http://127.0.0.1:1/kvmm-t-owner" in said
        assert "PostgreSQL" in said and "KVMM_DATA_DIR" in said
        assert refused.value.status == 409 and refused.value.code == "database_in_use"
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait(30)
    # Killed: its lock went with it; the stale file contents do not matter.
    assert sqlite_owner.owner_file(database).exists()
    claimed = sqlite_owner.claim(engine, "http://127.0.0.1:2")
    try:
        assert claimed == database
    finally:
        sqlite_owner.release(claimed)
        engine.dispose()


def test_nothing_is_claimed_in_memory() -> None:
    assert sqlite_owner.claim(make_engine("sqlite://"), "") is None


async def test_managers_of_one_process_share_the_claim_and_the_last_stop_frees_it(
    settings: Settings,
) -> None:
    first, second = Manager(settings), Manager(settings)
    await first.start()
    try:
        await second.start()
        await second.stop()
        # Still held by the first: another process is refused.
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", CHILD, settings.database_url],
            env=_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode != 0 and "is in use by another manager instance" in proc.stderr
        assert f"pid {os.getpid()}" in proc.stderr
    finally:
        await first.stop()
    # The last stop let go: another process claims the file.
    other = await asyncio.to_thread(_other_process_claims, settings.database_url)
    other.kill()
    await asyncio.to_thread(other.wait, 30)
