"""Fixtures for the libvirt runtime tests: a private test-driver host per test.

Every open of a `test:///<file>` URI gets its own fresh copy of the objects in the file,
so tests never see each other's changes (unlike `test:///default`, shared per process).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from kvmmanager.core.config import LibvirtSettings
from kvmmanager.virt.connection import HostConnection
from kvmmanager.virt.events import Event, EventBus, Subscription
from kvmmanager.virt.inventory import Inventory

FIXTURES = Path(__file__).parent / "fixtures"
TESTNODE_URI = f"test://{FIXTURES / 'testnode.xml'}"


@pytest.fixture
def testnode_uri() -> str:
    return TESTNODE_URI


@pytest.fixture
def libvirt_settings() -> LibvirtSettings:
    # Short backoff so reconnect tests do not wait; otherwise the defaults.
    return LibvirtSettings(reconnect_min_seconds=0.05, reconnect_max_seconds=0.5)


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
def inventory(bus: EventBus) -> Inventory:
    return Inventory(bus)


@pytest.fixture
async def testhost(
    bus: EventBus, inventory: Inventory, libvirt_settings: LibvirtSettings
) -> AsyncIterator[HostConnection]:
    host = HostConnection("kvmm-t-host-a", TESTNODE_URI, bus, inventory, libvirt_settings)
    await host.start()
    try:
        await host.wait_connected(30)
        yield host
    finally:
        await host.stop()


async def next_event(
    sub: Subscription, predicate: Callable[[Event], bool], seconds: float = 30.0
) -> Event:
    """The first event matching `predicate` (others are skipped); fails after `seconds`."""
    async with asyncio.timeout(seconds):
        while True:
            event = await sub.get()
            if predicate(event):
                return event


async def until(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    """Poll a condition on the loop with a generous deadline (no wall-clock assertion)."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - polling state, not waiting on one event
            await asyncio.sleep(0.01)


@pytest.fixture(name="next_event")
def next_event_fixture() -> Callable[..., object]:
    return next_event


@pytest.fixture(name="until")
def until_fixture() -> Callable[..., object]:
    return until
