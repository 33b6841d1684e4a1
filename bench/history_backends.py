"""Benchmark: the metric-history write when a 5-minute bucket closes, at 1,000 VMs, on
SQLite and on PostgreSQL in the same run (issue 16: "history-write cost per 5-minute
bucket at 1,000 VMs on SQLite vs PostgreSQL, same run").

Each backend gets a fresh migrated database (SQLite: a file; PostgreSQL: a throwaway
cluster from tests/postgres_cluster.py, fsync off as in the tests, so its figure is the
database work without disk flushes) filled with a day of 5-minute buckets and `hours`
of hourly means for N VMs, through the collector's own store functions. Then, per
bucket: write the bucket, roll up its hour, prune both tiers; the median and maximum of
`buckets` such closes are reported.

    .venv/bin/python bench/history_backends.py --vms 1000
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # bench/ (common, history_db) and tests.*

from common import Row, median, ms  # noqa: E402
from history_db import DAYS, HOST, _means  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402
from tests.postgres_cluster import Cluster  # noqa: E402

from kvmmanager.db import migrate  # noqa: E402
from kvmmanager.db.base import make_engine  # noqa: E402
from kvmmanager.services.metrics import store as metrics_store  # noqa: E402
from kvmmanager.services.metrics.history import (  # noqa: E402
    DOWNSAMPLE_STEP,
    DOWNSAMPLED_SECONDS,
    HOURLY_STEP,
)


def _closes(url: str, vms: int, hours: int, buckets: int) -> tuple[list[float], float]:
    engine = make_engine(url)
    migrate.upgrade(engine)
    db = sessionmaker(engine)
    rng = random.Random(16)
    now = time.time() // HOURLY_STEP * HOURLY_STEP
    step5 = int(DOWNSAMPLE_STEP)
    try:
        t0 = time.perf_counter()
        for h in range(hours, 0, -1):
            start = now - h * HOURLY_STEP
            metrics_store.save_bucket(db, HOST, start, HOURLY_STEP, _means(vms, rng))
        for k in range(int(DOWNSAMPLED_SECONDS // step5), 0, -1):
            metrics_store.save_bucket(db, HOST, now - k * step5, step5, _means(vms, rng))
        fill = time.perf_counter() - t0
        took = []
        for k in range(buckets):
            start = now + k * step5
            means = _means(vms, rng)
            t0 = time.perf_counter()
            metrics_store.save_bucket(db, HOST, start, step5, means)
            metrics_store.rollup(db, HOST, start, step5, HOURLY_STEP)
            metrics_store.prune(db, step5, start - DOWNSAMPLED_SECONDS)
            metrics_store.prune(db, HOURLY_STEP, start - DAYS * 86400)
            took.append(time.perf_counter() - t0)
    finally:
        engine.dispose()
    return took, fill


def run(workdir: Path, vms: int = 1000, hours: int = 48, buckets: int = 5) -> list[Row]:
    sqlite, sqlite_fill = _closes(f"sqlite:///{workdir / 'history.db'}", vms, hours, buckets)
    cluster = Cluster()
    try:
        pg, pg_fill = _closes(cluster.new_database(), vms, hours, buckets)
    finally:
        cluster.stop()
    label = f"history write ({vms} VMs, 24 h x 5 min + {hours} h x 1 h stored)"
    measure = f"one 5-min bucket closed (write, roll up, prune), median of {buckets}"
    return [
        Row(
            label,
            f"{measure}: SQLite (ours) vs PostgreSQL (peer)",
            f"{ms(median(sqlite))} (max {ms(max(sqlite))})",
            f"{ms(median(pg))} (max {ms(max(pg))})",
            f"{median(sqlite) / median(pg):.3g}x",
            "well under 5 min",
        ),
        Row(label, "filling the stored history", f"{sqlite_fill:.1f} s", f"{pg_fill:.1f} s"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--hours", type=int, default=48)
    ap.add_argument("--buckets", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kvmm-bench-history-") as d:
        for row in run(Path(d), args.vms, args.hours, args.buckets):
            print(" | ".join((row.bench, row.measure, row.ours, row.peer, row.ratio, row.target)))


if __name__ == "__main__":
    main()
