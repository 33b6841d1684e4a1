"""In-memory metric history: per host, one full-resolution ring (1 h) and one downsampled
ring (24 h), each VM's values stored as 16-bit codes. (Longer ranges, up to
`metrics.retention_days`, are hourly means read from the database: metrics_store.)

Why codes: 5,000 VMs x 1,800 samples x 8 values as Python floats would take gigabytes;
as `array('H')` it is 144 MB. A code is a logarithmic quantisation (code = round(log1p(v)
* 2048)): every value from 1 to ~8e13 is kept to 0.05 % (below 1, to +-0.0005), far
finer than a graph or an alert can tell apart. 0xFFFF means "no value".

Rings are preallocated at their full size when a VM first reports a value, so memory is
known up front (what one collection costs, an hour of history costs too). The full-
resolution ring is indexed by collection (a shared timestamp per slot); the 24 h ring by
wall-clock bucket (`ts // step`), which lets rows loaded from the database land in place.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from kvmmanager.services.metrics.rates import NFIELDS

MISSING = 0xFFFF
SCALE = 2048.0
MAX_CODE = MISSING - 1
_MISSING_ROW = array("H", [MISSING] * NFIELDS)

FULL_SECONDS = 3600.0
DOWNSAMPLED_SECONDS = 24 * 3600.0
DOWNSAMPLE_STEP = 300.0
# The long tier lives only in the database (metrics_store): hourly means, so 30 days are
# 720 points per graph and 5,000 VMs' month costs no memory here.
HOURLY_STEP = 3600


def encode(v: float | None) -> int:
    if v is None or v != v:  # None or NaN
        return MISSING
    if v <= 0.0:
        return 0
    if v == math.inf:
        return MAX_CODE
    return min(MAX_CODE, round(math.log1p(v) * SCALE))


def decode(code: int) -> float | None:
    if code == MISSING:
        return None
    return math.expm1(code / SCALE)


def encode_row(values: Sequence[float | None]) -> array:
    """`encode` of every value, inlined: it runs for every VM at every collection."""
    out = array("H", _MISSING_ROW)
    log1p = math.log1p
    for k, v in enumerate(values):
        if v is None or v != v:
            continue
        if v <= 0.0:
            out[k] = 0
        elif v == math.inf:
            out[k] = MAX_CODE
        else:
            code = round(log1p(v) * SCALE)
            out[k] = code if code < MAX_CODE else MAX_CODE
    return out


class FullRing:
    """Every collection of the last `capacity` intervals, for every VM of one host."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.ts = array("d", [0.0] * capacity)
        self.head = 0  # next slot to write
        self.count = 0
        self.rows: dict[str, array] = {}

    def append(self, ts: float, codes: dict[str, array]) -> None:
        """One collection: `codes` maps uuid -> NFIELDS codes; VMs that have history but
        no value this time get a gap."""
        pos = self.head
        lo, hi = pos * NFIELDS, (pos + 1) * NFIELDS
        self.ts[pos] = ts
        for uuid, row in codes.items():
            buf = self.rows.get(uuid)
            if buf is None:
                buf = self.rows[uuid] = array("H", _MISSING_ROW * self.capacity)
            buf[lo:hi] = row
        if len(codes) != len(self.rows):
            for uuid, buf in self.rows.items():
                if uuid not in codes:
                    buf[lo:hi] = _MISSING_ROW
        self.head = (pos + 1) % self.capacity
        self.count = min(self.count + 1, self.capacity)

    def forget(self, keep: Iterable[str]) -> None:
        keep = set(keep)
        for uuid in [u for u in self.rows if u not in keep]:
            del self.rows[uuid]

    def series(self, uuid: str, since: float, until: float) -> tuple[list[float], list[array]]:
        """(timestamps, per-slot code rows) in time order, within [since, until]."""
        buf = self.rows.get(uuid)
        if buf is None:
            return [], []
        start = (self.head - self.count) % self.capacity
        ts_out: list[float] = []
        rows: list[array] = []
        for k in range(self.count):
            pos = (start + k) % self.capacity
            t = self.ts[pos]
            if since <= t <= until:
                ts_out.append(t)
                rows.append(buf[pos * NFIELDS : (pos + 1) * NFIELDS])
        return ts_out, rows


@dataclass(slots=True)
class _Bucket:
    start: float
    sums: dict[str, list[float]] = field(default_factory=dict)
    counts: dict[str, list[int]] = field(default_factory=dict)


class DownsampledRing:
    """Per VM, the mean of each `step`-second bucket over the last `span` seconds."""

    def __init__(self, span: float = DOWNSAMPLED_SECONDS, step: float = DOWNSAMPLE_STEP) -> None:
        self.step = step
        self.capacity = int(span // step)
        self.bucket_ts = array("d", [-1.0] * self.capacity)
        self.rows: dict[str, array] = {}
        self._open: _Bucket | None = None

    def _slot(self, start: float) -> int:
        return int(start // self.step) % self.capacity

    def add(self, ts: float, values: dict[str, Sequence[float | None]]) -> _Bucket | None:
        """Fold one collection into the open bucket; returns the bucket it closed (when
        `ts` starts a new one) so the caller can persist it."""
        start = (ts // self.step) * self.step
        closed = None
        if self._open is not None and self._open.start != start:
            closed = self._open
            self.store(closed.start, self.means(closed))
            self._open = None
        if self._open is None:
            self._open = _Bucket(start)
        b = self._open
        for uuid, vals in values.items():
            sums = b.sums.get(uuid)
            if sums is None:
                sums = b.sums[uuid] = [0.0] * NFIELDS
                b.counts[uuid] = [0] * NFIELDS
            counts = b.counts[uuid]
            for k, v in enumerate(vals):
                if v is not None:
                    sums[k] += v
                    counts[k] += 1
        return closed

    @staticmethod
    def means(bucket: _Bucket) -> dict[str, list[float | None]]:
        out: dict[str, list[float | None]] = {}
        for uuid, sums in bucket.sums.items():
            counts = bucket.counts[uuid]
            out[uuid] = [s / n if n else None for s, n in zip(sums, counts, strict=True)]
        return out

    def store(self, start: float, means: dict[str, Sequence[float | None]]) -> None:
        """Write one bucket's means (from a closed bucket or from the database)."""
        pos = self._slot(start)
        lo, hi = pos * NFIELDS, (pos + 1) * NFIELDS
        if self.bucket_ts[pos] != start:
            # The slot held a bucket a day older: nothing in it belongs to `start`.
            for buf in self.rows.values():
                buf[lo:hi] = _MISSING_ROW
            self.bucket_ts[pos] = start
        for uuid, vals in means.items():
            buf = self.rows.get(uuid)
            if buf is None:
                buf = self.rows[uuid] = array("H", _MISSING_ROW * self.capacity)
            buf[lo:hi] = encode_row(vals)

    def forget(self, keep: Iterable[str]) -> None:
        keep = set(keep)
        for uuid in [u for u in self.rows if u not in keep]:
            del self.rows[uuid]

    def series(self, uuid: str, since: float, until: float) -> tuple[list[float], list[array]]:
        buf = self.rows.get(uuid)
        if buf is None:
            return [], []
        slots = sorted(
            (t, pos)
            for pos, t in enumerate(self.bucket_ts)
            if t >= 0 and since <= t + self.step and t <= until
        )
        return (
            [t for t, _ in slots],
            [buf[pos * NFIELDS : (pos + 1) * NFIELDS] for _, pos in slots],
        )


def columns(ts: list[float], rows: list[array], fields: Sequence[str]) -> dict[str, list]:
    """Columnar form (what uPlot draws): {"ts": [...], field: [...], ...}."""
    out: dict[str, list] = {"ts": ts}
    for k, name in enumerate(fields):
        out[name] = [_round(decode(r[k])) for r in rows]
    return out


def value_columns(
    ts: list[float], rows: list[list[float | None]], fields: Sequence[str]
) -> dict[str, list]:
    """`columns` for plain values (rows read from the database)."""
    out: dict[str, list] = {"ts": ts}
    for k, name in enumerate(fields):
        out[name] = [_round(r[k]) for r in rows]
    return out


def _round(v: float | None) -> float | None:
    # Codes are good to ~0.05 %; more digits in JSON would only be noise.
    return None if v is None else float(f"{v:.4g}")
