"""The arithmetic of alert rules: comparisons, consecutive-sample state, scope matching,
and the per-VM values a rule is checked against (from the metrics service's samples)."""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kvmmanager.core.errors import KvmmError
from kvmmanager.services.metrics.rates import FIELDS
from kvmmanager.virt.inventory import Inventory

if TYPE_CHECKING:
    from kvmmanager.db.ops_models import AlertRule

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@dataclass
class RuleState:
    """One rule for one subject: how many samples in a row were (not) in breach, and the
    alert that is firing, if any."""

    hits: int = 0
    oks: int = 0
    alert_id: int | None = None

    def observe(self, breach: bool, needed: int) -> str | None:
        """'fire', 'resolve' or None after one more sample."""
        if breach:
            self.hits, self.oks = self.hits + 1, 0
        else:
            self.hits, self.oks = 0, self.oks + 1
        if self.alert_id is None and breach and self.hits >= needed:
            return "fire"
        # As many good samples to resolve as bad ones to fire: no flapping on the edge.
        if self.alert_id is not None and not breach and self.oks >= needed:
            return "resolve"
        return None


def matches(rule: AlertRule, host: str, uuid: str, vm: dict[str, Any]) -> bool:
    if rule.host is not None and rule.host != host:
        return False
    if rule.vm is not None and rule.vm not in (uuid, vm.get("name")):
        return False
    return rule.tag is None or rule.tag in (vm.get("tags") or ())


def _finite(v: Any) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def metric_values(
    inventory: Inventory, host: str, latest: dict[str, Any], guest: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """{uuid: {"name", "tags", cpu_pct, mem_pct, ..., guest_disk_pct}} of one cycle."""
    out: dict[str, dict[str, Any]] = {}
    for uuid, sample in latest.items():
        row: dict[str, Any] = {k: _finite(v) for k, v in zip(FIELDS, sample.values, strict=True)}
        row["name"], row["tags"] = sample.name, []
        memory_kib = None
        with contextlib.suppress(KvmmError):
            info = inventory.domain(host, uuid)
            row["tags"], memory_kib = list(info.tags), info.memory_kib
        used = row.get("mem_bytes")
        row["mem_pct"] = used / (memory_kib * 1024) * 100 if used and memory_kib else None
        fs = (guest.get(uuid) or {}).get("filesystems") or []
        pcts = [p for f in fs if (p := _finite(f.get("used_percent"))) is not None]
        row["guest_disk_pct"] = max(pcts) if pcts else None
        out[uuid] = row
    return out
