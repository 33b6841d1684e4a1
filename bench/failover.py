"""Benchmark: singleton failover time between manager processes on one PostgreSQL database
(issue 16: "kill -9 of the singleton runner to the next schedule evaluated by another
instance, p50/p99").

Two instances (tests/reliability/fleet_instance.py children, the product's default
`fleet.heartbeat_seconds` = 3 and `fleet.lease_seconds` = 10 unless given) share a
throwaway PostgreSQL cluster (tests/postgres_cluster.py). Each round: the lease holder
makes a `once` schedule due one second later and is killed with SIGKILL at once; the
figure is the time from the kill to the other instance's `schedule.run` of it (the
schedule fell due while no live instance held the lease). The killed instance is then
started again as the standby, so every round kills the current holder.

    .venv/bin/python bench/failover.py --kills 20
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # bench/ (common) and the repo (tests.*)

from common import Row, median, pct  # noqa: E402
from sqlalchemy import create_engine, select  # noqa: E402
from tests.postgres_cluster import Cluster  # noqa: E402
from tests.reliability.test_fleet_failover import Child, instance_env  # noqa: E402

from kvmmanager.db.fleet_models import Lease  # noqa: E402


def run(workdir: Path, kills: int = 20, lease: float = 10.0, beat: float = 3.0) -> list[Row]:
    cluster = Cluster()
    url = cluster.new_database()
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    children = [Child(instance_env(workdir, url, i, lease, beat)) for i in range(2)]
    took: list[float] = []
    try:
        for k in range(kills):
            while True:
                with engine.connect() as c:
                    row = c.execute(select(Lease.holder, Lease.expires_at)).first()
                if row is not None and row[1] > datetime.now(UTC):
                    break
                time.sleep(0.05)
            holder = next(c for c in children if c.id == row[0])
            other = next(c for c in children if c is not holder)
            due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
            name = f"kvmm-bench-failover-{k}"
            holder.send(f"schedule {name} {due.isoformat()}")
            holder.expect("KVMM-SCHEDULE")
            holder.kill()
            t_kill = time.monotonic()
            assert datetime.now(UTC) < due, "the holder lived until the schedule was due"
            while other.expect("KVMM-RUN")[0] != name:
                pass
            took.append(time.monotonic() - t_kill)
            print(f"kill {k + 1}/{kills}: {took[-1]:.2f} s", file=sys.stderr, flush=True)
            slot = children.index(holder)
            children[slot] = Child(instance_env(workdir, url, len(children) + k, lease, beat))
    finally:
        for c in children:
            c.stop()
        engine.dispose()
        cluster.stop()
    label = f"failover (2 instances, PostgreSQL, lease {lease:g} s, beat {beat:g} s)"
    return [
        Row(
            label,
            f"kill -9 of the lease holder -> schedule run by the other, {len(took)} kills",
            f"p50 {median(took):.2f} s, p99 {pct(took, 99):.2f} s, max {max(took):.2f} s",
            "",
            "",
            "within 15 s",
        )
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--lease", type=float, default=10.0)
    ap.add_argument("--beat", type=float, default=3.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kvmm-bench-failover-") as d:
        for row in run(Path(d), args.kills, args.lease, args.beat):
            print(" | ".join((row.bench, row.measure, row.ours, row.target)))


if __name__ == "__main__":
    main()
