"""The login throttle's arithmetic on a fake clock (the real-server behaviour is in
tests/security/anonymous/test_login_limits.py)."""

from __future__ import annotations

import pytest

from kvmmanager.core.errors import RateLimited
from kvmmanager.services.users.login_throttle import MAX_KEYS, LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fail(t: LoginThrottle, user: str = "admin", addr: str = "203.0.113.5") -> None:
    t.check(user, addr)
    t.failed(user, addr)


def _retry_after(t: LoginThrottle, user: str = "admin", addr: str = "203.0.113.5") -> int:
    with pytest.raises(RateLimited) as e:
        t.check(user, addr)
    return e.value.details["retry_after"]


def test_failures_back_off_exponentially_per_user_and_address() -> None:
    clock = Clock()
    t = LoginThrottle(per_minute=1000, free_failures=3, backoff_max_seconds=60, clock=clock)
    for _ in range(2):
        _fail(t)
    t.check("admin", "203.0.113.5")  # the 3rd attempt is free too
    t.failed("admin", "203.0.113.5")
    waits = []
    for _ in range(8):
        waits.append(_retry_after(t))
        clock.now += waits[-1]
        _fail(t)
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]
    # Meanwhile the same user from another address, and another user from this one, pass.
    t.check("admin", "198.51.100.7")
    t.check("operator1", "203.0.113.5")
    # A success clears the streak.
    clock.now += 60
    t.check("admin", "203.0.113.5")
    t.succeeded("admin", "203.0.113.5")
    _fail(t)
    t.check("admin", "203.0.113.5")


def test_an_address_has_a_budget_per_minute_across_user_names() -> None:
    clock = Clock()
    t = LoginThrottle(per_minute=5, free_failures=100, backoff_max_seconds=60, clock=clock)
    for i in range(5):
        _fail(t, user=f"user{i}")
    assert _retry_after(t, user="user9") == 60
    t.check("user9", "198.51.100.7")  # other addresses keep theirs
    clock.now += 60
    t.check("user9", "203.0.113.5")


def test_memory_is_bounded_against_a_spray_of_names_and_addresses() -> None:
    clock = Clock()
    t = LoginThrottle(per_minute=10, free_failures=1, backoff_max_seconds=10, clock=clock)
    for i in range(3 * MAX_KEYS):
        clock.now += 0.01
        _fail(t, user=f"u{i}", addr=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    assert len(t._failures) <= MAX_KEYS
    assert len(t._by_address) <= MAX_KEYS + 1
