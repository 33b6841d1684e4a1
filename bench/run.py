"""Run the manager's benchmarks and print one table: ours, the peer measured in the same
run, the ratio, the target. No assertions: figures for docs/performance.md.

    .venv/bin/python bench/run.py                 # everything but `vm` (~3-4 minutes)
    .venv/bin/python bench/run.py --only list,sse # a subset
    .venv/bin/python bench/run.py --only vm       # real TCG guests (libvirtd, ~2 minutes)
    .venv/bin/python bench/run.py --quick         # tiny sizes (the smoke test uses this)
    .venv/bin/python bench/run.py --markdown      # the table as Markdown

Benchmarks (numbers as in issue 8): `list` (1: REST VM list vs virsh list), `stats` (2:
stats collection vs virsh domstats), `sse` (3: state change to 1 and 100 SSE clients,
slow clients), `memory` (6: manager RSS with 1,000 / 5,000 VMs and history), `history`
(the 30-day metric history in the database: size and reads at 1,000 VMs), `agent` (4:
agent ping and idle RSS vs qemu-ga on a host socket), `transfer` (5: chunked transfer vs
the raw socket), `iso` (7: agent ISO build, mastering vs xorriso), `hostile` (issue 9
item 3: the API's p50/p99 while a hostile guest is on the agent channel, per scenario
against an interleaved baseline; docs/reliability.md), `fleet` (issue 19: cold start and
footprint of `kvm-manager serve` with 1 / 10 / 100 test-driver hosts; bench/fleet.py alone
adds real libvirtd daemons and the fault scenarios), and, only when named, `browser` (issue
19 item 3: the VM list page at 1,000 / 5,000 VMs in Debian's chromium),
`vm` (4-5 inside real TCG guests: needs libvirtd, qemu:///system and root), `failover`
(issue 16: kill -9 of the singleton-lease holder to the next schedule run by another
instance, 20 kills), `balancer` (issue 16: REST list p50/p99 through HAProxy, two instances
vs one) and `history-pg` (issue 16: a 5-minute history bucket at 1,000 VMs, SQLite vs
PostgreSQL).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import agent_bench
import balancer
import browser_list
import failover
import fleet
import history_backends
import history_db
import hostile_api
import memory
import rest_list
import sse_fanout
import stats_cycle
from common import Row, machine, table

FULL: dict[str, Callable[[Path], list[Row]]] = {
    "list": lambda w: rest_list.run(w),
    "stats": lambda w: stats_cycle.run(w),
    "sse": lambda w: sse_fanout.run(w),
    "memory": lambda w: memory.run(w),
    "history": lambda w: history_db.run(w),
    "agent": lambda w: agent_bench.run_agent(w),
    "transfer": lambda w: agent_bench.run_transfer(w),
    "iso": lambda w: agent_bench.run_iso(w),
    "hostile": lambda w: hostile_api.run(w),
    "fleet": lambda w: fleet.run(w),
    "browser": lambda w: browser_list.run(w),
    "vm": lambda w: agent_bench.run_vm(w),
    "failover": lambda w: failover.run(w),
    "balancer": lambda w: balancer.run(w),
    "history-pg": lambda w: history_backends.run(w),
}
QUICK: dict[str, Callable[[Path], list[Row]]] = {
    "list": lambda w: rest_list.run(w, sizes=(20,), calls={20: 5}),
    "stats": lambda w: stats_cycle.run(w, sizes=(20,), n_cycles=2, system=False),
    "sse": lambda w: sse_fanout.run(w, clients=3, n=3, burst=10, bus_events=50, bus_queue=10),
    "memory": lambda w: memory.run(w, sizes=(20,), interval=0.2),
    "history": lambda w: history_db.run(w, vms=5, reads=3),
    "agent": lambda w: agent_bench.run_agent(w, pings=200, transfer_mb=2),
    "transfer": lambda w: agent_bench.run_transfer(w, pings=200, transfer_mb=2),
    "iso": lambda w: agent_bench.run_iso(w, repeats=1),
    "hostile": lambda w: hostile_api.run(w, requests=24, rounds=1),
    "fleet": lambda w: fleet.run(w, sizes=((2, 6),), restart=False),
    "browser": lambda w: browser_list.run(w, sizes=(20,), updates=1),
    "vm": lambda w: agent_bench.run_vm(w, n=50, transfer_mb=2),
    "failover": lambda w: failover.run(w, kills=2, lease=2.0, beat=0.5),
    "balancer": lambda w: balancer.run(w, vms=20, clients=2, calls=5, rounds=1),
    "history-pg": lambda w: history_backends.run(w, vms=5, hours=2, buckets=2),
}
# Run only when named in --only: they need what a development machine may not have.
# failover (issue 16: ~20 kills of ~11 s plus restarts, 6 min) and history-pg (1,000 VMs
# on SQLite and a throwaway PostgreSQL cluster) need PostgreSQL's server binaries; balancer
# needs them and Debian's haproxy.
OPT_IN = {"vm", "browser", "failover", "balancer", "history-pg"}


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated: " + ",".join(FULL))
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    suite = QUICK if args.quick else FULL
    names = [n for n in args.only.split(",") if n] or [n for n in suite if n not in OPT_IN]
    unknown = [n for n in names if n not in suite]
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(unknown)}")
    print(machine(), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="kvmm-bench-"))
    rows: list[Row] = []
    started = time.perf_counter()
    try:
        for name in names:
            t0 = time.perf_counter()
            rows += suite[name](workdir)
            print(f"[{name}: {time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(table(rows, args.markdown))
    print(f"total {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
