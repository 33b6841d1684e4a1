"""Persistence of the metric history in tiers (table `metric_history`), so a restart keeps
the graphs: 5-minute means for the last 24 hours (the in-memory ring's buckets, written as
each closes) and hourly means for `metrics.retention_days`, rolled up in the database
from the 5-minute rows (so an hour interrupted by a restart still gets its mean).
Blocking (SQLAlchemy Core for bulk speed): the collector calls these through
`asyncio.to_thread`.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, insert, literal, select
from sqlalchemy.orm import Session, sessionmaker

from kvmmanager.db.metrics_models import MetricSample
from kvmmanager.services.metrics.rates import FIELDS

_TABLE = MetricSample.__table__
_COLS = [_TABLE.c[name] for name in FIELDS]
# Byte counts and byte rates are kept as whole numbers (a fraction of a byte is noise, and
# SQLite stores an integral REAL in 1-6 bytes instead of 8).
_WHOLE = frozenset(k for k, name in enumerate(FIELDS) if name.endswith(("_bytes", "_bps")))


def _key(uuid: str) -> bytes:
    return uuidlib.UUID(uuid).bytes


def _uuid(key: bytes) -> str:
    return str(uuidlib.UUID(bytes=key))


def _stored(vals: Sequence[float | None]) -> list[float | None]:
    return [float(round(v)) if k in _WHOLE and v is not None else v for k, v in enumerate(vals)]


def save_bucket(
    db: sessionmaker[Session],
    host: str,
    start: float,
    step: float,
    means: dict[str, Sequence[float | None]],
) -> int:
    """Write one closed bucket of one host and tier. A bucket written before (the manager
    was restarted within the same bucket) is replaced, not duplicated."""
    ts, step_i = int(start), int(step)
    rows: list[dict[str, Any]] = []
    for uuid, vals in means.items():
        if all(v is None for v in vals):
            continue
        row: dict[str, Any] = {"host": host, "vm_uuid": _key(uuid), "ts": ts, "step": step_i}
        row.update(zip(FIELDS, _stored(vals), strict=True))
        rows.append(row)
    with db.begin() as s:
        s.execute(
            delete(_TABLE).where(_TABLE.c.host == host, _TABLE.c.step == step_i, _TABLE.c.ts == ts)
        )
        if rows:
            s.execute(insert(_TABLE), rows)
    return len(rows)


def rollup(db: sessionmaker[Session], host: str, start: float, src_step: int, dst_step: int) -> int:
    """(Re)compute the `dst_step` bucket holding `start` from the `src_step` rows inside
    it: per VM and field, the mean of the values present (SQL AVG skips NULLs). Called
    after each source bucket, so the current hour is always up to date."""
    lo = int(start) // dst_step * dst_step
    hi = lo + dst_step
    t = _TABLE
    src = (
        select(
            t.c.host,
            t.c.vm_uuid,
            literal(dst_step).label("step"),
            literal(lo).label("ts"),
            *(
                (func.round(func.avg(c)) if k in _WHOLE else func.avg(c)).label(c.name)
                for k, c in enumerate(_COLS)
            ),
        )
        .where(t.c.host == host, t.c.step == src_step, t.c.ts >= lo, t.c.ts < hi)
        .group_by(t.c.host, t.c.vm_uuid)
    )
    with db.begin() as s:
        s.execute(delete(t).where(t.c.host == host, t.c.step == dst_step, t.c.ts == lo))
        result = s.execute(insert(t).from_select(["host", "vm_uuid", "step", "ts", *FIELDS], src))
    return int(result.rowcount or 0)


def prune(db: sessionmaker[Session], step: int, older_than: float) -> int:
    """Delete one tier's buckets that start before `older_than`."""
    with db.begin() as s:
        result = s.execute(
            delete(_TABLE).where(_TABLE.c.step == int(step), _TABLE.c.ts < int(older_than))
        )
    return int(result.rowcount or 0)


def load(
    db: sessionmaker[Session], host: str, step: int, since: float
) -> dict[float, dict[str, list[float | None]]]:
    """bucket start -> {uuid: values} for one host and tier, oldest first."""
    out: dict[float, dict[str, list[float | None]]] = {}
    query = (
        select(_TABLE.c.ts, _TABLE.c.vm_uuid, *_COLS)
        .where(_TABLE.c.host == host, _TABLE.c.step == int(step), _TABLE.c.ts >= int(since))
        .order_by(_TABLE.c.ts)
    )
    with db() as s:
        for ts, key, *vals in s.execute(query):
            out.setdefault(float(ts), {})[_uuid(key)] = list(vals)
    return out


def series(
    db: sessionmaker[Session], host: str, uuid: str, step: int, since: float, until: float
) -> tuple[list[float], list[list[float | None]]]:
    """One VM's buckets of one tier that overlap [since, until], oldest first."""
    query = (
        select(_TABLE.c.ts, *_COLS)
        .where(
            _TABLE.c.host == host,
            _TABLE.c.vm_uuid == _key(uuid),
            _TABLE.c.step == int(step),
            _TABLE.c.ts > int(since) - int(step),
            _TABLE.c.ts <= int(until),
        )
        .order_by(_TABLE.c.ts)
    )
    ts_out: list[float] = []
    rows: list[list[float | None]] = []
    with db() as s:
        for ts, *vals in s.execute(query):
            ts_out.append(float(ts))
            rows.append(list(vals))
    return ts_out, rows


def forget_host(db: sessionmaker[Session], host: str) -> None:
    with db.begin() as s:
        s.execute(delete(_TABLE).where(_TABLE.c.host == host))
