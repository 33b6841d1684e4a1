"""Helpers shared by the benchmark modules: percentiles, result rows and the results table
(run.py prints it for all of them; a module run alone prints its own rows the same way)."""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of `values`."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Row:
    """One line of the results table: our figure, the peer's, and the target."""

    bench: str
    measure: str
    ours: str
    peer: str = ""
    ratio: str = ""
    target: str = ""


def ratio(ours: float, peer: float) -> str:
    if not peer or peer != peer or ours != ours:
        return ""
    return f"{ours / peer:.3g}x"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3g} ms"


HEADER = ("benchmark", "measure", "ours", "peer (same run)", "ratio", "target")


def machine() -> str:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    load = os.getloadavg()[0]
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, load average {load:.1f} at start"
    )


def table(rows: list[Row], markdown: bool) -> str:
    cells = [HEADER, *((r.bench, r.measure, r.ours, r.peer, r.ratio, r.target) for r in rows)]
    if markdown:
        lines = ["| " + " | ".join(c) + " |" for c in cells]
        lines.insert(1, "|" + " --- |" * len(HEADER))
        return "\n".join(lines)
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)) for c in cells)
