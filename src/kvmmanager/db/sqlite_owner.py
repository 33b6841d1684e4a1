"""One manager process per SQLite file (issue 16 item 5).

SQLite has no LISTEN/NOTIFY and one writer at a time: several instances belong on
PostgreSQL. A process claims its SQLite file by an exclusive, non-blocking `flock` on
`<database>.owner` beside it and holds it while it runs; a second process finds the lock
taken and is refused with the first's pid, host and address, which the owner wrote into
the file. The kernel drops the lock with the process, so an instance killed with SIGKILL
leaves a file whose stale contents mean nothing: the next start takes the lock at once.

The claim belongs to the process, not to one Manager object: Managers inside one process
(a CLI `serve` that prepares the database before its app's Manager starts, the test
suite's) share it, counted, because flock would otherwise refuse the process itself (each
open() is its own lock owner). It is a different file from migrate.exclusive()'s
`<database>.lock`, which instances hold only while preparing the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from kvmmanager.core.errors import Conflict

# What another process may have written into the owner file: bounded before parsing.
MAX_OWNER_BYTES = 4096


@dataclass(frozen=True)
class Owner:
    """Who holds a SQLite file, as its owner wrote it."""

    pid: int
    hostname: str
    address: str
    since: str


class DatabaseInUse(Conflict):
    """Another manager process serves this SQLite file."""

    code = "database_in_use"


@dataclass
class _Claim:
    fd: int
    count: int


_claims: dict[Path, _Claim] = {}
_lock = threading.Lock()


def sqlite_file(engine: Engine) -> Path | None:
    """The database file of a SQLite engine; None for PostgreSQL or an in-memory one."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).resolve()


def owner_file(database: Path) -> Path:
    return database.with_name(database.name + ".owner")


def _read_owner(fd: int) -> Owner | None:
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        raw = os.pread(fd, MAX_OWNER_BYTES, 0)
        data = json.loads(raw.decode())
        return Owner(
            pid=int(data["pid"]),
            hostname=str(data["hostname"])[:255],
            address=str(data["address"])[:512],
            since=str(data["since"])[:40],
        )
    return None


def _refusal(database: Path, owner: Owner | None) -> DatabaseInUse:
    if owner is None:
        who = "another manager instance (it has not said who it is yet)"
    else:
        who = f"another manager instance: pid {owner.pid} on {owner.hostname}"
        if owner.address:
            who += f", serving {owner.address}"
        who += f", since {owner.since}"
    return DatabaseInUse(
        f"the SQLite database {database} is in use by {who}. SQLite serves one manager "
        "instance: stop that one first, or give this one its own data directory "
        "(KVMM_DATA_DIR), or put every instance on one PostgreSQL database "
        "(database.url) to run several"
    )


def claim(engine: Engine, address: str) -> Path | None:
    """Claim the engine's SQLite file for this process (again: counted); raises
    DatabaseInUse when another process holds it. Returns the file claimed, or None when
    there is nothing to claim (PostgreSQL, in-memory)."""
    database = sqlite_file(engine)
    if database is None:
        return None
    with _lock:
        held = _claims.get(database)
        if held is not None:
            held.count += 1
            return database
        database.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = owner_file(database)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise _refusal(database, owner) from None
        except BaseException:
            os.close(fd)
            raise
        me = {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "address": address,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        _claims[database] = _Claim(fd=fd, count=1)
        return database


def release(database: Path | None) -> None:
    """Undo one claim; the last one of the process unlocks the file."""
    if database is None:
        return
    with _lock:
        held = _claims.get(database)
        if held is None:
            return
        held.count -= 1
        if held.count > 0:
            return
        del _claims[database]
        # Emptied first: a reader never names a process that let go.
        with contextlib.suppress(OSError):
            os.ftruncate(held.fd, 0)
        os.close(held.fd)  # releases the flock
