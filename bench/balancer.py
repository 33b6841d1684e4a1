"""Benchmark: REST list (GET /api/vms) through HAProxy with two manager instances vs one
(issue 16: "REST list p50/p99 through the load balancer with two instances vs one").

Two instances (real server processes, tests/reliability/balancer.py) share a throwaway
PostgreSQL cluster (tests/postgres_cluster.py) and one libvirt test-driver node of N VMs
each connects to itself. Two HAProxy processes run the documented example
(contrib/haproxy/kvm-manager.cfg): one balancing over both instances, one with instance
`a` alone. `clients` threads, each with its own keep-alive connection and the same API
token, send `calls` requests each; the rounds alternate between the two balancers so a
change of the machine's load hits both. A direct run against instance `a` (no balancer)
shows what HAProxy adds.

    .venv/bin/python bench/balancer.py --vms 1000 --clients 4 --calls 50 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # bench/ (common) and the repo (tests.*)

import httpx  # noqa: E402
from common import Row, median, pct, ratio  # noqa: E402
from testdriver import uri, write_node  # noqa: E402
from tests.postgres_cluster import Cluster  # noqa: E402
from tests.reliability.balancer import HAProxy, start_instances  # noqa: E402


def load(url: str, token: str, clients: int, calls: int) -> list[float]:
    """Latencies of `clients` x `calls` GET /api/vms sent at once by `clients` threads."""
    took: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def client() -> None:
        mine = []
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
            c.get("/api/vms").raise_for_status()  # the connection, before timing
            for _ in range(calls):
                t0 = time.perf_counter()
                r = c.get("/api/vms")
                dt = time.perf_counter() - t0
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                mine.append(dt)
        with lock:
            took.extend(mine)

    threads = [threading.Thread(target=client, name=f"kvmm-bench-lb-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed: {errors[0]}")
    return took


def _wait_inventory(url: str, token: str, vms: int) -> None:
    deadline = time.monotonic() + 300
    headers = {"Authorization": f"Bearer {token}"}
    while True:
        r = httpx.get(f"{url}/api/vms", headers=headers, timeout=120)
        if r.status_code == 200 and len(r.json()["vms"]) >= vms:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} never listed {vms} VMs: {r.status_code}")
        time.sleep(0.5)


def run(
    workdir: Path,
    vms: int = 1000,
    clients: int = 4,
    calls: int = 50,
    rounds: int = 3,
    metrics_interval: float = 2.0,
) -> list[Row]:
    cluster = Cluster()
    balancers: list[HAProxy] = []
    instances = {}
    try:
        node = uri(write_node(workdir / "node.xml", vms))
        # Every instance collects its hosts' stats itself (metrics.interval_seconds).
        extra = {"KVMM_METRICS__INTERVAL_SECONDS": str(metrics_interval)}
        instances = start_instances(workdir, cluster.new_database(), ["a", "b"], node, extra)
        instances["a"].api().close()  # makes the token (and changes the first password)
        token = instances["a"].token
        assert token is not None
        for srv in instances.values():
            _wait_inventory(srv.url, token, vms)
        two = HAProxy(workdir / "two", {n: s.port for n, s in instances.items()})
        balancers.append(two)
        one = HAProxy(workdir / "one", {"a": instances["a"].port})
        balancers.append(one)
        for lb in balancers:
            lb.wait_all_up()
        figures: dict[str, list[float]] = {"two": [], "one": [], "direct": []}
        for _ in range(rounds):
            figures["two"] += load(two.url, token, clients, calls)
            figures["one"] += load(one.url, token, clients, calls)
            figures["direct"] += load(instances["a"].url, token, clients, calls)
    finally:
        for lb in balancers:
            lb.stop()
        for srv in instances.values():
            srv.stop()
        cluster.stop()

    def ms(values: list[float], p: float) -> float:
        return (median(values) if p == 50 else pct(values, p)) * 1000

    label = (
        f"REST list via HAProxy ({vms} VMs, {clients} clients, stats every {metrics_interval:g} s)"
    )
    n = len(figures["two"])
    rows = []
    for p in (50, 99):
        rows.append(
            Row(
                label,
                f"GET /api/vms p{p}, 2 instances vs 1 behind the balancer, {n} calls each",
                f"{ms(figures['two'], p):.1f} ms",
                f"{ms(figures['one'], p):.1f} ms",
                ratio(ms(figures["two"], p), ms(figures["one"], p)),
                "",
            )
        )
        rows.append(
            Row(
                label,
                f"GET /api/vms p{p}, 1 instance behind the balancer vs direct",
                f"{ms(figures['one'], p):.1f} ms",
                f"{ms(figures['direct'], p):.1f} ms",
                ratio(ms(figures["one"], p), ms(figures["direct"], p)),
                "",
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--metrics-interval", type=float, default=2.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kvmm-bench-lb-") as d:
        rows = run(Path(d), args.vms, args.clients, args.calls, args.rounds, args.metrics_interval)
        for row in rows:
            print(" | ".join((row.bench, row.measure, row.ours, row.peer, row.ratio)))


if __name__ == "__main__":
    main()
