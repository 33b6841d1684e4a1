"""Profile the hottest path of a large host: one stats collection (parse, rates, history
codes, then storing into the rings) at N VMs of qemu-shaped records, with pyinstrument.

    .venv/bin/python bench/profile_stats.py [--vms 5000] [--cycles 10]
    .venv/bin/python bench/profile_stats.py --compare <git revision>

`--compare` loads metrics/rates.py and metrics/history.py as they were at a revision and
runs the worker-thread part of a collection with the old and the current code in
alternating rounds on the same prebuilt records (same process, same load), checking
that both give identical samples and history codes. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import stats_cycle  # noqa: E402

from kvmmanager.services.metrics import history as metrics_history  # noqa: E402
from kvmmanager.services.metrics import rates as metrics_rates  # noqa: E402
from kvmmanager.services.metrics.history import DownsampledRing, FullRing  # noqa: E402
from kvmmanager.services.metrics.service import HostMetrics, collect_blocking  # noqa: E402

SOURCES = {
    "metrics_rates": "src/kvmmanager/services/metrics/rates.py",
    "metrics_history": "src/kvmmanager/services/metrics/history.py",
}


def profile(vms: int, n_cycles: int) -> None:
    from pyinstrument import Profiler

    conn = stats_cycle._SyntheticConn(vms)
    svc = stats_cycle._service()
    hm = HostMetrics("bench", FullRing(svc.capacity), DownsampledRing())
    host = stats_cycle._Host(conn)
    for _ in range(2):  # a baseline, and the rings allocated
        svc._apply(hm, collect_blocking(host, hm.counters))  # type: ignore[arg-type]
    # The records are built before the profile: the synthetic "libvirt" is not ours.
    records = iter([conn.getAllDomainStats(0, 0) for _ in range(n_cycles)])
    conn.getAllDomainStats = lambda stats, flags: next(records)  # type: ignore[method-assign]
    profiler = Profiler(interval=0.0005)
    c0 = time.thread_time()
    profiler.start()
    for _ in range(n_cycles):
        svc._apply(hm, collect_blocking(host, hm.counters))  # type: ignore[arg-type]
    profiler.stop()
    cpu = (time.thread_time() - c0) / n_cycles
    print(f"{vms} VMs: {cpu * 1000:.1f} ms CPU per cycle under the profiler")
    print(profiler.output_text(unicode=False, color=False))


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _cycle(rates: Any, history: Any, records: list, prev: dict, t: float) -> tuple:
    """collect_blocking's loop with the given modules' functions."""
    samples, counters, codes = {}, {}, {}
    for dom, stats in records:
        uuid = dom.UUIDString()
        sample, cur = rates.build_sample(uuid, dom.name(), stats, dom.ID(), t, prev.get(uuid))
        samples[uuid] = sample
        if cur is not None:
            counters[uuid] = cur
            codes[uuid] = history.encode_row(sample.values)
    return samples, counters, codes


def compare(rev: str, vms: int, n_cycles: int, rounds: int = 5) -> None:
    repo = HERE.parent
    tmp = Path(tempfile.mkdtemp(prefix="kvmm-profile-"))
    old: dict[str, ModuleType] = {}
    for name, rel in SOURCES.items():
        src = subprocess.run(
            ["git", "-C", str(repo), "show", f"{rev}:{rel}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (tmp / f"old_{name}.py").write_text(src)
        old[name] = _load(f"old_{name}", tmp / f"old_{name}.py")
    impls = {
        f"before ({rev})": (old["metrics_rates"], old["metrics_history"]),
        "after (working tree)": (metrics_rates, metrics_history),
    }
    conn = stats_cycle._SyntheticConn(vms)
    records = [conn.getAllDomainStats(0, 0) for _ in range(n_cycles + 2)]
    cpu: dict[str, list[float]] = {name: [] for name in impls}
    last: dict[str, tuple] = {}
    for _ in range(rounds):
        for name, (rates, history) in impls.items():
            prev: dict = {}
            for k, recs in enumerate(records):
                c0 = time.thread_time()
                samples, prev, codes = _cycle(rates, history, recs, prev, float(k + 1))
                if k >= 2:  # steady state: a baseline exists
                    cpu[name].append(time.thread_time() - c0)
            last[name] = (samples, codes)
    (a_s, a_c), (b_s, b_c) = last.values()
    same = a_c == b_c and all(
        all(
            (x is None and y is None) or abs(x - y) <= 1e-9 * max(1.0, abs(x))
            for x, y in zip(a_s[u].values, b_s[u].values, strict=True)
        )
        and a_s[u].disk_rd_bytes == b_s[u].disk_rd_bytes
        and a_s[u].net_tx_bytes == b_s[u].net_tx_bytes
        for u in a_s
    )
    for name, values in cpu.items():
        m = statistics.median(values)
        print(
            f"{name}: {m * 1000:.1f} ms CPU per collection at {vms} VMs (median of "
            f"{len(values)}) = {m / stats_cycle.INTERVAL * 100:.2f} % of a core at 2 s"
        )
    print("identical samples and codes:", same)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--vms", type=int, default=5000)
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--compare", metavar="REV", help="before/after against a git revision")
    args = ap.parse_args()
    if args.compare:
        compare(args.compare, args.vms, args.cycles)
    else:
        profile(args.vms, args.cycles)


if __name__ == "__main__":
    main()
