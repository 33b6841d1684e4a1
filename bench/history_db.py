"""Benchmark: the persisted metric history at fleet size (issue 10's 30-day history).

A fresh, migrated SQLite database is filled as a month of collection would leave it for
N VMs: 24 h of 5-minute buckets (288 per VM) and 30 days of hourly means (720 per VM),
through the same store functions the collector uses. Reported: the file size (bytes per
row, and the figure for N VMs), the collector's database work when a 5-minute bucket
closes (write the bucket, roll up its hour, prune both tiers), and reading one VM's
7-day and 30-day graph (the hourly tier, as the API serves `range=7d|30d`).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from common import Row, median, ms
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from kvmmanager.db import migrate
from kvmmanager.db.base import make_engine
from kvmmanager.services.metrics import store as metrics_store
from kvmmanager.services.metrics.history import (
    DOWNSAMPLE_STEP,
    DOWNSAMPLED_SECONDS,
    HOURLY_STEP,
    value_columns,
)
from kvmmanager.services.metrics.rates import FIELDS

DAYS = 30
HOST = "local"


def _uuid(i: int) -> str:
    return f"6b766d6d-0000-4000-8000-{i:012x}"


def _means(vms: int, rng: random.Random) -> dict[str, list[float | None]]:
    # Realistic magnitudes (CPU %, bytes, bytes/s, ops/s): what SQLite stores as REAL.
    return {
        _uuid(i): [
            rng.uniform(0, 200),
            rng.uniform(2e8, 4e9),
            rng.uniform(0, 5e7),
            rng.uniform(0, 5e7),
            rng.uniform(0, 500),
            rng.uniform(0, 500),
            rng.uniform(0, 1e7),
            rng.uniform(0, 1e7),
        ]
        for i in range(vms)
    }


def run(workdir: Path, vms: int = 1000, reads: int = 20) -> list[Row]:
    assert len(FIELDS) == 8
    path = workdir / f"history-{vms}.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    db = sessionmaker(engine)
    rng = random.Random(8)
    now = time.time() // HOURLY_STEP * HOURLY_STEP
    step5 = int(DOWNSAMPLE_STEP)
    try:
        t0 = time.perf_counter()
        for h in range(DAYS * 24, 0, -1):
            start = now - h * HOURLY_STEP
            metrics_store.save_bucket(db, HOST, start, HOURLY_STEP, _means(vms, rng))
        n5 = int(DOWNSAMPLED_SECONDS // step5)
        for k in range(n5, 0, -1):
            metrics_store.save_bucket(db, HOST, now - k * step5, step5, _means(vms, rng))
        fill = time.perf_counter() - t0
        with engine.begin() as conn:
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
            rows = conn.scalar(text("SELECT count(*) FROM metric_history"))
        # As the collector leaves it (pages split by inserts), then packed by VACUUM.
        steady = path.stat().st_size
        with engine.connect() as conn:
            conn.execute(text("VACUUM"))
        size = path.stat().st_size
        # The collector's work when a bucket closes (once per 5 minutes per host).
        periodic = []
        for k in range(3):
            start = now + k * step5
            means = _means(vms, rng)
            t0 = time.perf_counter()
            metrics_store.save_bucket(db, HOST, start, step5, means)
            metrics_store.rollup(db, HOST, start, step5, HOURLY_STEP)
            metrics_store.prune(db, step5, start - DOWNSAMPLED_SECONDS)
            metrics_store.prune(db, HOURLY_STEP, start - DAYS * 86400)
            periodic.append(time.perf_counter() - t0)
        graph: dict[int, list[float]] = {7: [], 30: []}
        points: dict[int, int] = {}
        for _ in range(reads):
            uuid = _uuid(rng.randrange(vms))
            for days in graph:
                t0 = time.perf_counter()
                since = now - days * 86400
                ts, vals = metrics_store.series(db, HOST, uuid, HOURLY_STEP, since, now)
                value_columns(ts, vals, FIELDS)
                graph[days].append(time.perf_counter() - t0)
                points[days] = len(ts)
    finally:
        engine.dispose()
    per_vm = steady / vms
    label = f"history DB ({vms} VMs, {DAYS} d)"
    return [
        Row(
            label,
            f"SQLite file: {rows:,} rows (288 x 5-min + 720 x 1 h per VM), as written"
            " (after VACUUM)",
            f"{steady / 1e6:.1f} MB = {steady / rows:.0f} B/row ({size / 1e6:.1f} MB)",
            "",
            "",
            "small for 1,000 VMs",
        ),
        Row(label, "as written, extrapolated to 5,000 VMs", f"{per_vm * 5000 / 1e6:.0f} MB"),
        Row(label, "filling it (1,008 bucket writes)", f"{fill:.1f} s"),
        Row(
            label,
            "per closed 5-minute bucket: write + hourly roll-up + prune both tiers",
            ms(median(periodic)),
        ),
        Row(
            label,
            f"one VM's graph: 7 d ({points.get(7, 0)} points) / 30 d ({points.get(30, 0)} points)",
            f"{ms(median(graph[7]))} / {ms(median(graph[30]))}",
        ),
    ]
