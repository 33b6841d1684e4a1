"""The suite's Hypothesis profile (tests/conftest.py) has no wall-clock check: a property
test failed CI once only because the machine was busy (test_jsonwire's 'too_slow' health
check, a 1.6 s draw with part 1 on both cores)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings


def test_the_loaded_profile_has_no_deadline_and_no_speed_check() -> None:
    assert settings.default.deadline is None
    assert HealthCheck.too_slow in settings.default.suppress_health_check
