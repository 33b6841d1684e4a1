"""Helpers shared by the benchmark modules: percentiles and result rows."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


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
