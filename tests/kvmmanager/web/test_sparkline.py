"""Sparkline geometry: scaled into the box, newest last, gaps skipped."""

from __future__ import annotations

from kvmmanager.web.sparkline import HEIGHT, WIDTH, _points


def test_points_scale_into_the_box_and_skip_gaps() -> None:
    pts = _points([0.0, None, 50.0, 100.0, 150.0], top=100.0)
    coords = [tuple(map(float, p.split(","))) for p in pts.split()]
    assert len(coords) == 4
    assert coords[0] == (0.0, float(HEIGHT))
    assert coords[-1][0] == WIDTH
    assert all(0 <= y <= HEIGHT for _, y in coords)
    assert coords[-1][1] == coords[-2][1]  # above the top: drawn at the top


def test_too_few_points_draw_nothing() -> None:
    assert _points([5.0], top=100.0) == ""
    assert _points([1.0, 2.0], top=0.0) == ""
