"""History rings: the 16-bit codec, wrap-around, gaps, downsampling, ranges."""

from __future__ import annotations

import math

import pytest

from kvmmanager.services.metrics.history import (
    MISSING,
    DownsampledRing,
    FullRing,
    columns,
    decode,
    encode,
    encode_row,
)
from kvmmanager.services.metrics.rates import FIELDS, NFIELDS


def row(v: float | None) -> list[float | None]:
    return [v] * NFIELDS


@pytest.mark.parametrize("v", [0.001, 0.5, 1.0, 99.9, 1234.5, 1e6, 3.3e9, 1e12, 5e13])
def test_codec_keeps_relative_precision(v: float) -> None:
    back = decode(encode(v))
    assert back is not None
    # Half a code step of log1p: (1 + v) / 4096, i.e. <= 0.05 % of v from 1 up.
    assert abs(back - v) <= (1 + v) / 4096 * 1.0001


def test_codec_edges() -> None:
    assert encode(None) == MISSING and decode(MISSING) is None
    assert encode(math.nan) == MISSING
    assert encode(0.0) == 0 and encode(-5.0) == 0
    assert encode(math.inf) == MISSING - 1
    assert encode(1e30) == MISSING - 1  # saturates instead of wrapping into "missing"


def test_full_ring_orders_and_wraps() -> None:
    ring = FullRing(capacity=4)
    for i in range(6):
        ring.append(float(i), {"a": encode_row(row(float(i)))})
    ts, rows = ring.series("a", 0, 100)
    assert ts == [2.0, 3.0, 4.0, 5.0]
    assert [decode(r[0]) for r in rows] == pytest.approx([2.0, 3.0, 4.0, 5.0], rel=1e-3)
    ts, _ = ring.series("a", 3.0, 4.0)
    assert ts == [3.0, 4.0]
    assert ring.series("unknown", 0, 100) == ([], [])


def test_full_ring_gaps_for_absent_vms_and_forget() -> None:
    ring = FullRing(capacity=8)
    ring.append(1.0, {"a": encode_row(row(1.0)), "b": encode_row(row(2.0))})
    ring.append(2.0, {"a": encode_row(row(1.0))})
    _, rows = ring.series("b", 0, 10)
    assert decode(rows[0][0]) == pytest.approx(2.0, rel=1e-3) and rows[1][0] == MISSING
    # A VM that appears later has no invented past.
    ring.append(3.0, {"c": encode_row(row(7.0))})
    ts, rows = ring.series("c", 0, 10)
    assert [r[0] for r in rows[:2]] == [MISSING, MISSING] and ts == [1.0, 2.0, 3.0]
    ring.forget(["a"])
    assert set(ring.rows) == {"a"}


def test_downsampled_ring_means_and_closed_bucket() -> None:
    ring = DownsampledRing(span=3600, step=300)
    assert ring.add(600.0, {"a": [10.0, *row(None)[1:]]}) is None
    assert ring.add(700.0, {"a": [20.0, *row(None)[1:]]}) is None
    closed = ring.add(900.0, {"a": row(1.0)})
    assert closed is not None and closed.start == 600.0
    means = ring.means(closed)
    assert means["a"][0] == pytest.approx(15.0) and means["a"][1] is None
    ts, rows = ring.series("a", 0, 10_000)
    assert ts == [600.0]
    assert decode(rows[0][0]) == pytest.approx(15.0, rel=1e-3)


def test_downsampled_ring_store_overwrites_a_day_old_slot() -> None:
    ring = DownsampledRing(span=1200, step=300)  # 4 slots
    ring.store(0.0, {"a": row(1.0)})
    ring.store(1200.0, {"b": row(2.0)})  # same slot, one span later
    assert ring.series("a", 0, 5000) == ([1200.0], [ring.rows["a"][0:NFIELDS]])
    assert ring.rows["a"][0] == MISSING
    ts, rows = ring.series("b", 0, 5000)
    assert ts == [1200.0] and decode(rows[0][0]) == pytest.approx(2.0, rel=1e-3)


def test_columns_are_uplot_shaped() -> None:
    ring = FullRing(capacity=3)
    ring.append(1.0, {"a": encode_row([1.0, None, *([0.0] * (NFIELDS - 2))])})
    out = columns(*ring.series("a", 0, 5), FIELDS)
    assert list(out) == ["ts", *FIELDS]
    assert out["ts"] == [1.0] and out["mem_bytes"] == [None] and out["cpu_pct"] == [1.0]


def test_encode_row_is_encode_of_each_value() -> None:
    values = [None, math.nan, -1.0, 0.0, 0.5, 1e9, math.inf, 1e30]
    assert list(encode_row(values)) == [encode(v) for v in values]
