"""Engine and session factory. SQLite gets WAL, foreign keys and a busy timeout on connect;
PostgreSQL goes through psycopg 3 (`postgresql://` URLs included)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from kvmmanager.core.logs import hide_sql_rows

# Stable constraint names so alembic migrations are identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SQLITE_BUSY_TIMEOUT_MS = 10_000


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # WAL makes NORMAL durable against application crashes; only power loss can lose
        # the last transactions, which is acceptable for this data.
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


def _private_file(path: Path) -> None:
    """Create the database (and its directory) readable by the owner only: it holds
    password and token hashes. SQLite gives its -wal/-shm files the same mode."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _tighten(path.parent, 0o700)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    _tighten(path, 0o600)


def _tighten(path: Path, mode: int) -> None:
    """A directory or database made beforehand (by an admin's mkdir, by an older
    version) is made private too. Only what this user owns, and never a sticky
    directory like /tmp that others share."""
    st = path.stat()
    mine = st.st_uid == os.getuid() and not st.st_mode & stat.S_ISVTX
    if mine and stat.S_IMODE(st.st_mode) & ~mode:
        path.chmod(stat.S_IMODE(st.st_mode) & mode)


def make_engine(url: str) -> Engine:
    # Some rows hold secrets in clear (webhook secrets, SMTP passwords): at DEBUG, neither
    # statement parameters (also kept out of error messages) nor result rows are logged.
    hide_sql_rows()
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        # A plain postgresql:// URL means psycopg 3 here (SQLAlchemy's default would be
        # psycopg2, which is not installed); an explicit +driver is kept.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, hide_parameters=True)
    if parsed.database and parsed.database != ":memory:":
        _private_file(Path(parsed.database))
    # Sessions are used from worker threads (FastAPI threadpool, job threads).
    engine = create_engine(url, connect_args={"check_same_thread": False}, hide_parameters=True)
    event.listen(engine, "connect", _sqlite_on_connect)
    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: services return ORM rows after commit and callers read them.
    return sessionmaker(engine, expire_on_commit=False)
