"""Sparklines for the VM list: the last minutes of CPU and memory as SVG polylines,
drawn server-side from the metrics history (no per-row requests, no inline script)."""

from __future__ import annotations

import time
from typing import Any

from kvmmanager.core.errors import KvmmError

WINDOW_SECONDS = 600
POINTS = 40
WIDTH, HEIGHT = 80, 20


def _points(values: list[float | None], top: float) -> str:
    vals = [v for v in values if v is not None]
    if len(vals) < 2 or top <= 0:
        return ""
    step = max(1, len(vals) // POINTS)
    vals = vals[-POINTS * step :: step]
    dx = WIDTH / (len(vals) - 1)
    return " ".join(
        f"{i * dx:.1f},{HEIGHT - min(v, top) / top * (HEIGHT - 1):.1f}" for i, v in enumerate(vals)
    )


def sparkline(manager: Any, vm: Any) -> dict[str, Any] | None:
    """{"cpu": points, "mem": points, "cpu_now": %, "mem_now": bytes} or None when the
    metrics pipeline has nothing for this VM (yet)."""
    if vm.state not in ("running", "blocked", "paused"):
        return None
    try:
        history = manager.metrics.history(vm.host, vm.uuid, since=time.time() - WINDOW_SECONDS)
    except (KvmmError, AttributeError):
        return None
    series = history["series"]
    cpu, mem = series.get("cpu_pct") or [], series.get("mem_bytes") or []
    if not cpu:
        return None
    cpu_top = max(100.0, max((v for v in cpu if v is not None), default=0.0))
    return {
        "cpu": _points(cpu, cpu_top),
        "mem": _points(mem, float(vm.memory_kib * 1024)),
        "cpu_now": next((v for v in reversed(cpu) if v is not None), None),
        "mem_now": next((v for v in reversed(mem) if v is not None), None),
    }
