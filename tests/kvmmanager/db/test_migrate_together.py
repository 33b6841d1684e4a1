"""Two manager processes starting at the same moment on a new database (a fleet upgraded
at once, or a first start of two instances): the schema is migrated once, under the
database's lock (PostgreSQL: an advisory lock; SQLite: a lock file beside the database),
both start, and exactly one first admin is made. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

import kvmmanager
from kvmmanager.db import migrate
from kvmmanager.db.base import make_engine
from kvmmanager.db.models import User

# The children import the code under test, wherever the test run found it.
SRC = Path(kvmmanager.__file__).parents[1]
INSTANCES = 2

# Imports first (seconds), then every child waits for the go file and prepares the
# database at once: the migrations' DDL of the children overlaps.
CHILD = textwrap.dedent(
    """
    import os, sys, time
    from kvmmanager.core.config import get_settings
    from kvmmanager.services.manager import Manager

    m = Manager(get_settings())
    print("KVMM-WAITING", flush=True)
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.001)
    m.prepare_database()
    print("KVMM-ADMIN-MADE" if m.initial_admin_password else "KVMM-ADMIN-FOUND", flush=True)
    """
)


@pytest.mark.slow
def test_instances_starting_together_migrate_once_and_make_one_admin(
    db_url: str, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    children = []
    for i in range(INSTANCES):
        env = {
            **os.environ,
            "KVMM_CONFIG": str(tmp_path / "no-config.toml"),
            "KVMM_DATA_DIR": str(tmp_path / f"data-{i}"),
            "KVMM_DATABASE__URL": db_url,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
        }
        children.append(
            subprocess.Popen(
                [sys.executable, "-c", CHILD, str(go)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        for c in children:
            assert c.stdout is not None
            assert c.stdout.readline().strip() == "KVMM-WAITING", c.stderr.read()  # type: ignore[union-attr]
        go.touch()
        outs = [c.communicate(timeout=120) for c in children]
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait(30)
    # Every instance started: none died on another's half-made schema.
    assert [c.returncode for c in children] == [0] * INSTANCES, [err[-3000:] for _, err in outs]
    said = sorted(out.strip().splitlines()[-1] for out, _ in outs)
    assert said == ["KVMM-ADMIN-FOUND"] * (INSTANCES - 1) + ["KVMM-ADMIN-MADE"]
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            versions = list(conn.scalars(text("SELECT version_num FROM alembic_version")))
            assert conn.scalar(select(func.count()).select_from(User)) == 1
        assert versions == [migrate.head()]
    finally:
        engine.dispose()
