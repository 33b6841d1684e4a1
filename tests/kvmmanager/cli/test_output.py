"""How human tables show numbers (issue 17's try: raw epoch floats and byte counts)."""

from __future__ import annotations

from kvmmanager.cli.output import human_value


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
