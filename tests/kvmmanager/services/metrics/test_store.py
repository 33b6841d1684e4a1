"""The persisted history tiers (table metric_history): buckets written and read back,
the hourly roll-up, pruning per tier, and the migration from the one-tier table."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from kvmmanager.db import migrate
from kvmmanager.db.base import make_engine
from kvmmanager.services.metrics import store as metrics_store
from kvmmanager.services.metrics.rates import FIELDS

HOUR = 3600
T0 = 1_800_000_000 // HOUR * HOUR  # an hour boundary
A = "6b766d6d-0000-4000-8000-00000000000a"
B = "6b766d6d-0000-4000-8000-00000000000b"


@pytest.fixture
def db(tmp_path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'h.db'}")
    migrate.upgrade(engine)
    yield sessionmaker(engine)
    engine.dispose()


def vals(cpu: float | None, mem: float | None = 1e9) -> list[float | None]:
    return [cpu, mem, *([0.0] * (len(FIELDS) - 2))]


def test_buckets_written_rolled_up_and_read_back(db: sessionmaker[Session]) -> None:
    # An hour of 5-minute buckets: VM a's CPU 0..11 %, VM b without a CPU figure at first.
    for k in range(12):
        means = {A: vals(float(k)), B: vals(None if k < 6 else 50.0)}
        metrics_store.save_bucket(db, "h1", T0 + k * 300, 300, means)
        metrics_store.rollup(db, "h1", T0 + k * 300, 300, HOUR)
    # The next hour's first bucket starts the next hourly row; the first one is complete.
    metrics_store.save_bucket(db, "h1", T0 + HOUR, 300, {A: vals(99.0)})
    assert metrics_store.rollup(db, "h1", T0 + HOUR, 300, HOUR) == 1

    ts, rows = metrics_store.series(db, "h1", A, HOUR, T0 - 10 * HOUR, T0 + 2 * HOUR)
    assert ts == [T0, T0 + HOUR]
    assert rows[0][0] == pytest.approx(5.5) and rows[1][0] == pytest.approx(99.0)
    assert rows[0][1] == pytest.approx(1e9)
    # AVG over the values present: b's hour is the mean of its six figures, not of twelve.
    _, (b_row,) = metrics_store.series(db, "h1", B, HOUR, T0, T0 + 1)
    assert b_row[0] == pytest.approx(50.0)
    five = metrics_store.series(db, "h1", A, 300, T0, T0 + HOUR - 1)
    assert len(five[0]) == 12 and five[1][3][0] == pytest.approx(3.0)
    # A bucket that overlaps the range's start is part of it; one after its end is not.
    assert metrics_store.series(db, "h1", A, HOUR, T0 + 1800, T0 + 1800)[0] == [T0]
    assert metrics_store.load(db, "h1", 300, T0 + HOUR)[T0 + HOUR][A][0] == 99.0
    # Other hosts are separate series.
    assert metrics_store.series(db, "h2", A, HOUR, T0, T0 + HOUR) == ([], [])


def test_byte_figures_are_stored_whole(db: sessionmaker[Session]) -> None:
    metrics_store.save_bucket(db, "h1", T0, 300, {A: [12.345, 1000.4, *([2.5] * 6)]})
    (row,) = metrics_store.series(db, "h1", A, 300, T0, T0)[1]
    assert dict(zip(FIELDS, row, strict=True)) == {
        "cpu_pct": 12.345,
        "mem_bytes": 1000.0,
        "disk_rd_bps": 2.0,  # round half to even
        "disk_wr_bps": 2.0,
        "disk_rd_iops": 2.5,
        "disk_wr_iops": 2.5,
        "net_rx_bps": 2.0,
        "net_tx_bps": 2.0,
    }


def test_rewriting_a_bucket_replaces_it(db: sessionmaker[Session]) -> None:
    metrics_store.save_bucket(db, "h1", T0, 300, {A: vals(1.0)})
    metrics_store.rollup(db, "h1", T0, 300, HOUR)
    metrics_store.save_bucket(db, "h1", T0, 300, {A: vals(3.0)})
    metrics_store.rollup(db, "h1", T0, 300, HOUR)
    assert metrics_store.series(db, "h1", A, 300, T0, T0)[1] == [vals(3.0)]
    assert metrics_store.series(db, "h1", A, HOUR, T0, T0)[1][0][0] == 3.0
    # A VM without a single value in a bucket writes no row at all.
    assert metrics_store.save_bucket(db, "h1", T0 + 300, 300, {A: [None] * len(FIELDS)}) == 0


def test_prune_keeps_each_tier_to_its_own_age(db: sessionmaker[Session]) -> None:
    for k in range(4):
        metrics_store.save_bucket(db, "h1", T0 + k * HOUR, 300, {A: vals(1.0)})
        metrics_store.save_bucket(db, "h1", T0 + k * HOUR, HOUR, {A: vals(1.0)})
    assert metrics_store.prune(db, 300, T0 + 2 * HOUR) == 2
    assert sorted(metrics_store.load(db, "h1", 300, 0)) == [T0 + 2 * HOUR, T0 + 3 * HOUR]
    assert len(metrics_store.load(db, "h1", HOUR, 0)) == 4


def test_migration_moves_old_rows_and_rolls_up_their_hours(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate.upgrade(engine, "0007")
    with engine.begin() as conn:
        for k, cpu in enumerate((10.0, 20.0, None)):
            conn.execute(
                text(
                    "INSERT INTO metric_samples (host, vm_uuid, ts, step, cpu_pct, mem_bytes)"
                    " VALUES ('h1', :uuid, :ts, 300, :cpu, 5.0)"
                ),
                {"uuid": A, "ts": T0 + k * 300, "cpu": cpu},
            )
    migrate.upgrade(engine)
    db = sessionmaker(engine)
    try:
        assert len(metrics_store.load(db, "h1", 300, 0)) == 3
        ts, rows = metrics_store.series(db, "h1", A, HOUR, T0, T0 + HOUR)
        assert ts == [T0] and rows[0][0] == pytest.approx(15.0) and rows[0][1] == 5.0
        with engine.connect() as conn:
            assert "metric_samples" not in {
                r[0] for r in conn.execute(text("SELECT name FROM sqlite_master"))
            }
    finally:
        engine.dispose()
