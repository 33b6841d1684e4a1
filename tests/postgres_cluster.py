"""A throwaway PostgreSQL cluster for the test run (Debian's postgresql, no systemd).

initdb + pg_ctl in a temporary directory, as the `postgres` user when the run is root
(PostgreSQL refuses to run as root), listening only on a unix socket in that directory
with a port number of its own, so it never meets a system cluster or another run's.
fsync is off: the cluster dies with the run. Each test gets a fresh database in it.
"""

from __future__ import annotations

import atexit
import functools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

# Debian installs the server outside PATH; /usr/local/bin may hold links to it.
SEARCH = ["/usr/lib/postgresql/*/bin", "/usr/local/bin", "/usr/bin"]


def find_bin(name: str) -> str | None:
    for pattern in SEARCH:
        for d in sorted(Path("/").glob(pattern.lstrip("/")), reverse=True):
            if (d / name).is_file():
                return str(d / name)
    return shutil.which(name)


def _free_port() -> int:
    # Only a number for the socket's name (.s.PGSQL.<port>): nothing listens on TCP.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self) -> None:
        initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError(
                "PostgreSQL's initdb/pg_ctl not found: run scripts/install-system-packages --test"
            )
        self.pg_ctl = pg_ctl
        self.dir = Path(tempfile.mkdtemp(prefix="kvmm-t-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run(
            [initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
             "-E", "UTF8", "--no-locale"]
        )  # fmt: skip
        opts = (
            f"-k {self.dir} -p {self.port} -c listen_addresses='' -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run([pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"),
                   "-w", "-t", "60", "start"])  # fmt: skip
        self.admin = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")

    def _run(self, cmd: list[str]) -> None:
        r = subprocess.run([*self._as, *cmd], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {r.stdout}{r.stderr}")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.dir}&port={self.port}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        name = f"kvmm_t_{secrets.token_hex(6)}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        return self.url(name)

    def stop(self) -> None:
        self.admin.dispose()
        subprocess.run(
            [*self._as, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


@functools.cache
def shared_cluster() -> Cluster:
    """One cluster per test process, whichever test directory asks first."""
    cluster = Cluster()
    atexit.register(cluster.stop)
    return cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Cluster:
    return shared_cluster()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Runs the test on SQLite (a file) and on the run's own PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kvmm.db'}"
    return shared_cluster().new_database()
