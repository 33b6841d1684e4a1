"""Reconnect waits (issue 19): hosts dropped together spread their attempts instead of
retrying in lockstep. Counted, not timed: the waits each host planned are binned."""

from __future__ import annotations

import asyncio
import collections
import random

from kvmmanager.core.config import LibvirtSettings
from kvmmanager.virt.backoff import Backoff
from kvmmanager.virt.connection import HostConnection
from kvmmanager.virt.events import EventBus
from kvmmanager.virt.inventory import Inventory

HOSTS = 100
BINS = 10


def _binned(values: list[float], low: float, width: float) -> collections.Counter[int]:
    return collections.Counter(min(int((v - low) / width), BINS - 1) for v in values)


def test_waits_double_up_to_the_cap_never_below_half_a_step() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(7))
    steps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    waits = [backoff.after_failure() for _ in steps]
    assert all(step / 2 <= w <= step for w, step in zip(waits, steps, strict=True)), waits
    backoff.reset()
    assert 0.25 <= backoff.after_failure() <= 0.5
    assert 0.0 <= backoff.after_loss() <= 0.5


def test_a_hundred_hosts_draw_spread_waits() -> None:
    firsts = [Backoff(0.5, 30.0, random.Random(seed)).after_loss() for seed in range(HOSTS)]
    bins = _binned(firsts, 0.0, 0.5 / BINS)
    assert len(bins) >= BINS - 2 and max(bins.values()) <= HOSTS // 4, bins
    retries = [Backoff(2.0, 30.0, random.Random(seed)).after_failure() for seed in range(HOSTS)]
    bins = _binned(retries, 1.0, 1.0 / BINS)
    assert len(bins) >= BINS - 2 and max(bins.values()) <= HOSTS // 4, bins


async def test_a_hundred_test_driver_hosts_dropped_at_once_do_not_reconnect_in_lockstep() -> None:
    """100 connections (libvirt's test driver, one in-process instance each) lost in the
    same instant, as when a network blip drops them all: each plans its reopen at a time
    of its own within the first step, and every one comes back."""
    bus = EventBus()
    inventory = Inventory(bus)
    first = 2.0
    settings = LibvirtSettings(reconnect_min_seconds=first, reconnect_max_seconds=first)
    hosts = [
        HostConnection(f"kvmm-t-jitter-{i:03d}", "test:///default", bus, inventory, settings)
        for i in range(HOSTS)
    ]
    try:
        await asyncio.gather(*(h.start() for h in hosts))
        await asyncio.gather(*(h.wait_connected(120) for h in hosts))
        sub = bus.subscribe(predicate=lambda e: e.kind == "host.status")
        for h in hosts:  # one loop turn: nothing runs between these
            h._notify_lost(h._gen, "simulated network blip")
        # Each host announces its reopen with the time it planned (before it waits).
        planned: dict[str, float] = {}
        back: set[str] = set()
        async with asyncio.timeout(120):
            while len(back) < HOSTS:
                event = await sub.get()
                if event.data["status"] == "reconnecting":
                    planned.setdefault(event.host, event.data["next_attempt_at"])
                elif event.data["status"] == "connected" and event.host in planned:
                    back.add(event.host)
        assert len(planned) == HOSTS
        bins = _binned(list(planned.values()), min(planned.values()), first / BINS)
        assert len(bins) >= BINS - 2 and max(bins.values()) <= HOSTS // 4, bins
        assert all(h.status == "connected" and h.next_attempt_at is None for h in hosts)
    finally:
        await asyncio.gather(*(h.stop() for h in hosts), return_exceptions=True)
