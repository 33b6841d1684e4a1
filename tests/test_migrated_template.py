"""The suite's migrated-template shortcut (tests/migrated_template.py) gives a test's new
SQLite database exactly what alembic would, and nothing else takes the shortcut."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest
from sqlalchemy import text
from tests.migrated_template import TemplateUpgrade

from kvmmanager.core.config import Settings
from kvmmanager.db import migrate
from kvmmanager.db.base import make_engine
from kvmmanager.services.manager import Manager


def _schema(path: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
            "ORDER BY type, name"
        ).fetchall()
        version = db.execute("SELECT version_num FROM alembic_version").fetchall()
    return [*rows, ("alembic_version", "", repr(version))]


@pytest.mark.real_migrations  # migrate.upgrade is alembic's here
def test_a_copied_database_is_the_one_alembic_makes(tmp_path: Path) -> None:
    calls: list[str] = []

    def counting_upgrade(engine: object, revision: str = "head") -> None:
        calls.append(revision)
        migrate.upgrade(engine, revision)  # type: ignore[arg-type]

    upgrade = TemplateUpgrade(counting_upgrade, tmp_path)
    migrated = tmp_path / "alembic" / "k.db"
    real = make_engine(f"sqlite:///{migrated}")
    migrate.upgrade(real)
    real.dispose()

    copies = [tmp_path / f"copy{i}" / "k.db" for i in range(2)]
    for path in copies:
        engine = make_engine(f"sqlite:///{path}")
        upgrade(engine)
        with engine.connect() as conn:  # the product's pragmas still hold on the copy
            assert conn.scalar(text("PRAGMA journal_mode")) == "wal"
            assert conn.scalar(text("PRAGMA foreign_keys")) == 1
        engine.dispose()
        assert _schema(path) == _schema(migrated)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # as make_engine made it
    assert calls == ["head"]  # alembic ran once, for the template


@pytest.mark.real_migrations
def test_anything_but_a_new_sqlite_file_at_head_runs_alembic(tmp_path: Path) -> None:
    calls: list[tuple[str, str]] = []

    def recording_upgrade(engine: object, revision: str = "head") -> None:
        calls.append((str(engine.url.database), revision))  # type: ignore[attr-defined]
        migrate.upgrade(engine, revision)  # type: ignore[arg-type]

    upgrade = TemplateUpgrade(recording_upgrade, tmp_path)
    old = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(old, "0001")  # another revision
    upgrade(old)  # a database that has tables already
    old.dispose()
    memory = make_engine("sqlite://")
    upgrade(memory)  # in memory: nothing to copy into a file
    memory.dispose()
    assert calls == [
        (str(tmp_path / "old.db"), "0001"),
        (str(tmp_path / "old.db"), "head"),
        ("None", "head"),
    ]
    assert not (tmp_path / "migrated-template.db").exists()  # never needed


def test_a_test_s_manager_gets_the_copy(settings: Settings) -> None:
    assert isinstance(migrate.upgrade, TemplateUpgrade)
    manager = Manager(settings)
    manager.prepare_database()
    with manager.engine.connect() as conn:
        assert conn.scalar(text("SELECT version_num FROM alembic_version")) == migrate.head()
        assert conn.scalar(text("SELECT count(*) FROM users WHERE username = 'admin'")) == 1
    manager.engine.dispose()


@pytest.mark.real_migrations
def test_a_real_migrations_test_runs_alembic_itself() -> None:
    assert not isinstance(migrate.upgrade, TemplateUpgrade)
