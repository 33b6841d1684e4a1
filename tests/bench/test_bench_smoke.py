"""Every benchmark runs end to end on a tiny size (no timing is asserted: the figures
belong in docs/performance.md, not in the suite). The runner runs as its own process,
as a developer runs it (and away from any event loop a browser test left running)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[2] / "bench" / "run.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUNNER), *args], capture_output=True, text=True, timeout=600
    )


def table_rows(stdout: str) -> list[list[str]]:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("|")]
    assert lines[0].startswith("| benchmark | measure | ours")
    assert lines[1].startswith("| ---")
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


@pytest.mark.parametrize(
    "name",
    [
        *("list", "stats", "sse", "memory", "history", "agent", "transfer", "iso", "hostile"),
        # Two server processes (the preparation, then `kvm-manager serve`): ~10 s alone.
        pytest.param("fleet", marks=pytest.mark.slow),
        # A throwaway PostgreSQL cluster. (`failover` has no smoke run: 4 manager process
        # starts took 172 s at load 13; tests/reliability/test_fleet_failover.py runs the
        # same children.)
        pytest.param("history-pg", marks=pytest.mark.slow),
    ],
)
def test_benchmark_runs_on_a_tiny_size(name: str) -> None:
    done = run("--quick", "--only", name, "--markdown")
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    assert rows, f"{name} produced no rows"
    for bench, measure, ours, *_ in rows:
        assert bench and measure and ours, (bench, measure, ours)
    if name == "sse":
        resync = [r for r in rows if "resync" in r[1]]
        assert resync and resync[0][2] == "5 of 5"
    if name == "hostile":
        # Every scenario (9 hostile + the control) against its baseline, with its agent calls.
        ratios = [r for r in rows if r[5]]
        assert len(ratios) == 10 and all(r[4].endswith("x") for r in ratios), ratios
        assert len([r for r in rows if "agent calls" in r[1]]) == 10
    if name in ("agent", "transfer"):
        # Measured beside its peer (qemu-ga, the raw socket) in the same run: a ratio.
        assert rows[0][3] and rows[0][4].endswith("x"), rows[0]


def test_unknown_benchmark_is_refused() -> None:
    done = run("--only", "nope")
    assert done.returncode == 2 and "unknown benchmark(s): nope" in done.stderr
