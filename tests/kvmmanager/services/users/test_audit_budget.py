"""The anonymous-failure audit budget on a fake clock (the real server's flood is in
tests/security/anonymous/test_audit_growth.py)."""

from __future__ import annotations

from kvmmanager.services.users.audit_budget import MAX_SUMMARIES, OTHERS, AnonymousFailureBudget


class Clock:
    def __init__(self) -> None:
        self.now = 6000.0  # the start of a minute

    def __call__(self) -> float:
        return self.now


def test_each_address_and_the_whole_server_have_a_budget_per_minute() -> None:
    clock = Clock()
    b = AnonymousFailureBudget(per_address=3, total=5, clock=clock)
    assert [b.admit("a") for _ in range(5)] == [True, True, True, False, False]
    assert [b.admit("b") for _ in range(3)] == [True, True, False]  # the total is spent
    assert b.admit("c") is False
    assert b.take_closed() == []  # the minute is not over
    clock.now += 60
    closed = {s.address: s.count for s in b.take_closed()}
    assert closed == {"a": 2, "b": 1, "c": 1}
    assert b.take_closed() == []  # once each
    assert b.admit("a") is True  # a new minute, a new budget


def test_a_spray_of_addresses_gives_a_bounded_number_of_summaries() -> None:
    clock = Clock()
    b = AnonymousFailureBudget(per_address=0, total=0, clock=clock)
    for i in range(50_000):
        assert b.admit(f"10.0.{i >> 8 & 255}.{i & 255}-{i}") is False
    clock.now += 60
    closed = b.take_closed()
    assert len(closed) <= MAX_SUMMARIES + 1
    assert sum(s.count for s in closed) == 50_000
    assert closed[-1].address == OTHERS
