"""How human tables show numbers (issue 17's try: raw epoch floats and byte counts)."""

from __future__ import annotations

from kvmmanager.cli.output import cell, human_value


def test_dates_sizes_and_floats_read_as_a_person_would() -> None:
    assert human_value("created", 1765075200.123456) == "2025-12-07 02:40:00 UTC"
    assert human_value("updated_at", 1765075200) == "2025-12-07 02:40:00 UTC"
    assert human_value("stale_since", 1765075200.5) == "2025-12-07 02:40:00 UTC"
    assert human_value("size", 10737418240) == "10.0 GiB"
    assert human_value("mean_ms", 3.14159265) == "3.14"
    assert human_value("cycles", 120) == 120
    # Not dates: small numbers under a date-like key, and booleans.
    assert human_value("since", 12.5) == "12.5"
    assert human_value("size", True) is True
    assert human_value("name", "x") == "x"


def test_volume_figures_and_nested_objects_show_sizes() -> None:
    """Issue 17's independent try, item 9: capacity/allocation printed as raw integers,
    also inside nested objects (a backup's volumes)."""
    assert human_value("capacity", 2 << 30) == "2.0 GiB"
    assert human_value("allocation", 196608) == "192.0 KiB"
    assert human_value("available", 1 << 40) == "1.0 TiB"
    assert human_value("memory_kib", 262144) == "256.0 MiB"
    nested = cell([{"disk": "vda", "capacity": 1 << 30, "bytes": 5 << 20}]).plain
    assert nested == "disk=vda, capacity=1.0 GiB, bytes=5.0 MiB"
