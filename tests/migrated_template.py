"""A migrated SQLite database made once per test process and copied where a test's Manager
would migrate a new, empty SQLite database to head.

Running alembic's 13+ revisions on an empty file costs ~0.7-1.7 s and nearly every
Manager a test builds does it; copying a database that the same migrations made (SQLite's
backup API, into the test's own file through its own engine) costs milliseconds.
tests/conftest.py installs `TemplateUpgrade` in place of `kvmmanager.db.migrate.upgrade`
for every test except those marked `real_migrations` (the migration tests themselves);
anything else (another revision, a database that has tables, PostgreSQL, an in-memory
database) runs the real upgrade. The product never sees this module: it lives in tests/.
tests/test_migrated_template.py proves a copied database is the migrated one.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

from kvmmanager.db.base import make_engine

Upgrade = Callable[..., None]


def is_empty_sqlite_file(engine: Engine) -> bool:
    """`engine` is a SQLite database on disk with no table, index or view yet."""
    if engine.dialect.name != "sqlite":
        return False
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return False
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar() == 0


class TemplateUpgrade:
    """`migrate.upgrade(engine, revision="head")`, copying the template where it can.

    `directory` holds the template, made on first use with `real_upgrade` (so by the same
    migrations, in this process, from this tree)."""

    def __init__(self, real_upgrade: Upgrade, directory: Path) -> None:
        self.real_upgrade = real_upgrade
        self.path = directory / "migrated-template.db"
        self._lock = threading.Lock()
        self._made = False

    def template(self) -> Path:
        with self._lock:
            if not self._made:
                engine = make_engine(f"sqlite:///{self.path}")
                try:
                    self.real_upgrade(engine)
                finally:
                    engine.dispose()
                self._made = True
        return self.path

    def __call__(self, engine: Engine, revision: str = "head") -> None:
        if revision != "head" or not is_empty_sqlite_file(engine):
            self.real_upgrade(engine, revision)
            return
        source = sqlite3.connect(f"file:{self.template()}?mode=ro", uri=True)
        try:
            with engine.connect() as conn:
                # The engine's own connection: its pragmas (WAL, foreign keys) stay as the
                # product set them, and the file keeps the mode make_engine gave it.
                dbapi = conn.connection.driver_connection
                assert isinstance(dbapi, sqlite3.Connection)
                source.backup(dbapi)
        finally:
            source.close()
