"""Persistence of the downsampled history (table `metric_samples`), so a restart keeps
the last 24 hours of graphs. Blocking (SQLAlchemy Core for bulk speed): the collector
calls these through `asyncio.to_thread`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session, sessionmaker

from kvmmanager.db.metrics_models import MetricSample
from kvmmanager.services.metrics_rates import FIELDS

_TABLE = MetricSample.__table__
_COLS = [_TABLE.c[name] for name in FIELDS]


def save_bucket(
    db: sessionmaker[Session],
    host: str,
    start: float,
    step: float,
    means: dict[str, Sequence[float | None]],
) -> int:
    """Write one closed bucket of one host. A bucket written before (the manager was
    restarted within the same bucket) is replaced, not duplicated."""
    ts = int(start)
    rows: list[dict[str, Any]] = []
    for uuid, vals in means.items():
        if all(v is None for v in vals):
            continue
        row: dict[str, Any] = {"host": host, "vm_uuid": uuid, "ts": ts, "step": int(step)}
        row.update(zip(FIELDS, vals, strict=True))
        rows.append(row)
    with db.begin() as s:
        s.execute(delete(_TABLE).where(_TABLE.c.host == host, _TABLE.c.ts == ts))
        if rows:
            s.execute(insert(_TABLE), rows)
    return len(rows)


def prune(db: sessionmaker[Session], older_than: float) -> int:
    with db.begin() as s:
        result = s.execute(delete(_TABLE).where(_TABLE.c.ts < int(older_than)))
    return int(result.rowcount or 0)


def load(
    db: sessionmaker[Session], host: str, since: float
) -> dict[float, dict[str, list[float | None]]]:
    """bucket start -> {uuid: values} for one host, oldest first."""
    out: dict[float, dict[str, list[float | None]]] = {}
    query = (
        select(_TABLE.c.ts, _TABLE.c.vm_uuid, *_COLS)
        .where(_TABLE.c.host == host, _TABLE.c.ts >= int(since))
        .order_by(_TABLE.c.ts)
    )
    with db() as s:
        for ts, uuid, *vals in s.execute(query):
            out.setdefault(float(ts), {})[uuid] = list(vals)
    return out


def forget_host(db: sessionmaker[Session], host: str) -> None:
    with db.begin() as s:
        s.execute(delete(_TABLE).where(_TABLE.c.host == host))
