"""Every benchmark runs end to end on a tiny size (no timing is asserted: the figures
belong in docs/performance.md, not in the suite)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def runner():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("run")
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("name", ["list", "stats", "sse", "memory"])
def test_benchmark_runs_on_a_tiny_size(runner, name: str, capsys: pytest.CaptureFixture) -> None:
    rows = runner.main(["--quick", "--only", name])
    out = capsys.readouterr().out
    assert rows, f"{name} produced no rows"
    for row in rows:
        assert row.bench and row.measure and row.ours, row
        assert row.measure in out
    if name == "sse":
        resync = [r for r in rows if "resync" in r.measure]
        assert resync and resync[0].ours == "5 of 5"


def test_markdown_table(runner, capsys: pytest.CaptureFixture) -> None:
    rows = runner.main(["--quick", "--only", "stats", "--markdown"])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("|")]
    assert len(lines) == len(rows) + 2 and lines[1].startswith("| ---")


def test_unknown_benchmark_is_refused(runner) -> None:
    with pytest.raises(SystemExit):
        runner.main(["--only", "nope"])
