"""The alembic migrations produce exactly the models' schema on SQLite and on a real
PostgreSQL server (`db_url` runs each test on both), and SQLite is tuned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from kvmmanager.db import migrate
from kvmmanager.db.base import Base, make_engine

# These tests are about the migrations themselves: alembic runs, not the suite's copy.
pytestmark = pytest.mark.real_migrations


def test_migrations_match_models(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == []
    tables = set(inspect(engine).get_table_names())
    assert {"users", "api_tokens", "sessions", "audit_log", "hosts", "jobs"} <= tables
    assert "alembic_version" in tables


def test_upgrade_is_idempotent(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM alembic_version")) == 1


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'p.db'}")
    with engine.connect() as conn:
        assert conn.scalar(text("PRAGMA journal_mode")) == "wal"
        assert conn.scalar(text("PRAGMA foreign_keys")) == 1
        assert conn.scalar(text("PRAGMA busy_timeout")) >= 5000


def test_sqlite_file_is_private(tmp_path: Path) -> None:
    import os
    import stat

    db = tmp_path / "new" / "k.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate.upgrade(engine)
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(db.parent).st_mode) == 0o700


def test_upgrade_keeps_rows_and_widens_progress(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, kind, target, state, progress_done, progress_total,"
                " message, created_at, updated_at) VALUES ('j1', 'k', '', 'done', 1, 2, '',"
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET progress_total = :n"), {"n": 5 * 2**40})
        assert conn.scalar(text("SELECT progress_total FROM jobs WHERE id = 'j1'")) == 5 * 2**40


def test_migrations_render_for_postgresql() -> None:
    """The same migrations produce PostgreSQL DDL (offline; no server needed)."""
    import io

    from alembic import command

    cfg = migrate.alembic_config()
    cfg.set_main_option("sqlalchemy.url", "postgresql://kvmm@db/kvmm")
    out = io.StringIO()
    cfg.output_buffer = out
    command.upgrade(cfg, "head", sql=True)
    sql = out.getvalue()
    for table in ("users", "api_tokens", "sessions", "audit_log", "hosts", "jobs"):
        assert f"CREATE TABLE {table} " in sql
    assert "TIMESTAMP WITH TIME ZONE" in sql
    assert "TYPE BIGINT" in sql


def test_downgrade_to_base_and_upgrade_again(db_url: str) -> None:
    """Every migration's downgrade runs (to an empty schema) and head comes back."""
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    migrate.downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(engine)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, Base.metadata) == []


def test_a_postgresql_url_uses_psycopg_3(pg_cluster: Any) -> None:
    engine = make_engine(pg_cluster.new_database())
    assert engine.dialect.driver == "psycopg"
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT 1")) == 1


def test_a_data_dir_made_beforehand_is_made_private(tmp_path: Path) -> None:
    """An admin's `mkdir data` (0755) and an older 0644 database are tightened at start
    (the independent try found the data dir left world-readable)."""
    import os
    import stat

    folder = tmp_path / "premade"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    db = folder / "k.db"
    db.touch()
    db.chmod(0o644)
    migrate.upgrade(make_engine(f"sqlite:///{db}"))
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
