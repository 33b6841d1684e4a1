"""get_metrics: CPU, load, memory, swap, filesystems and NIC counters from /proc."""

from __future__ import annotations

import os
import threading
import time

from .system import filesystems, meminfo, read_text, uptime_seconds

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple


_lock = threading.Lock()


def cpu_times() -> Tuple[int, int]:
    """(busy, total) jiffies summed over all CPUs."""
    fields = read_text("/proc/stat").split("\n", 1)[0].split()[1:]
    values = [int(v) for v in fields if v.isdigit()]
    if len(values) < 4:
        return 0, 0
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    # guest/guest_nice (fields 9, 10) are already counted in user/nice.
    total = sum(values[:8])
    return total - idle, total


def cpu_percent(ctx: Any) -> float:
    with _lock:
        prev: Optional[Tuple[int, int]] = getattr(ctx, "cpu_sample", None)
        if prev is None:
            prev = cpu_times()
            time.sleep(0.1)
        cur = cpu_times()
        ctx.cpu_sample = cur
    busy, total = cur[0] - prev[0], cur[1] - prev[1]
    return round(100.0 * busy / total, 1) if total > 0 else 0.0


def net_counters() -> List[Dict[str, Any]]:
    out = []
    for line in read_text("/proc/net/dev").splitlines()[2:]:
        name, _, rest = line.partition(":")
        f = rest.split()
        if len(f) < 16:
            continue
        out.append(
            {
                "name": name.strip(),
                "rx_bytes": int(f[0]),
                "rx_packets": int(f[1]),
                "rx_errors": int(f[2]),
                "tx_bytes": int(f[8]),
                "tx_packets": int(f[9]),
                "tx_errors": int(f[10]),
            }
        )
    return out


def get_metrics(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    mem = meminfo()
    total = mem.get("MemTotal", 0)
    avail = mem.get("MemAvailable", mem.get("MemFree", 0))
    swap_total, swap_free = mem.get("SwapTotal", 0), mem.get("SwapFree", 0)
    return {
        "cpu_percent": cpu_percent(ctx),
        "load_average": list(os.getloadavg()),
        "memory": {
            "total_kb": total,
            "available_kb": avail,
            "used_kb": total - avail,
            "used_percent": round(100.0 * (total - avail) / total, 1) if total else 0.0,
        },
        "swap": {"total_kb": swap_total, "free_kb": swap_free, "used_kb": swap_total - swap_free},
        "filesystems": filesystems(),
        "network": net_counters(),
        "uptime_seconds": uptime_seconds(),
    }


HANDLERS = {"get_metrics": get_metrics}
