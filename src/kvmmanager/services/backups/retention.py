"""Which backups a policy keeps: the newest `keep_last`, plus the newest of each of the
last `keep_daily` days and `keep_weekly` ISO weeks, days and weeks counted in the
policy's time zone. Both kinds of backup prune by it: snapshot policies (policies.py)
and backup images, whole chains at a time (images.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kvmmanager.services.automation.zones import zone


def retained(
    snaps: list[tuple[str, float]], keep_last: int, keep_daily: int, keep_weekly: int, tz: str
) -> set[str]:
    """The names to keep of (name, created unix time) snapshots of one policy and VM."""
    newest_first = sorted(snaps, key=lambda s: (s[1], s[0]), reverse=True)
    keep = {name for name, _ in newest_first[:keep_last]}
    z = zone(tz)
    for count, bucket in ((keep_daily, "day"), (keep_weekly, "week")):
        seen: list[Any] = []
        for name, created in newest_first:
            local = datetime.fromtimestamp(created, UTC).astimezone(z)
            key = local.date() if bucket == "day" else local.isocalendar()[:2]
            if key in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(key)
            keep.add(name)
    return keep
