"""A frozen libvirtd (SIGSTOP of a PRIVATE daemon, see conftest.private_host) under one
HostConnection in this process: what happens to calls waiting for a worker when the host
turns "not responding", and to a host whose daemon is frozen before it ever connected.

Deadlines here are long (30 s) on purpose: a call refused at the state change says so
("not responding ... was not sent"), while one that waited out its deadline says "waited
30 s for a free libvirt worker". The outcome is read from the message, never from a
clock; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.migration.second_host import SecondHost
from tests.reliability.conftest import frozen

from kvmmanager.core.config import LibvirtSettings
from kvmmanager.core.errors import HostUnavailable, KvmmError
from kvmmanager.virt.connection import NOT_RESPONDING, HostConnection
from kvmmanager.virt.events import EventBus
from kvmmanager.virt.inventory import Inventory

pytestmark = [pytest.mark.libvirtd]

LONG = 30.0  # every deadline: far beyond what any outcome below should take
WORKERS = 2
QUEUED = 6


def _settings() -> LibvirtSettings:
    return LibvirtSettings(
        deadline_read_seconds=LONG,
        deadline_lifecycle_seconds=LONG,
        heartbeat_seconds=0.5,
        not_responding_seconds=1.0,
        connect_seconds=1.0,
        keepalive_interval=2,
        keepalive_count=4,
        reconnect_min_seconds=0.1,
        reconnect_max_seconds=1.0,
        workers_per_host=WORKERS,
        accel="tcg",
    )


@pytest.fixture
async def frozen_host(private_host: SecondHost) -> AsyncIterator[HostConnection]:
    bus = EventBus()
    hc = HostConnection("kvmm-t-frzq", private_host.uri, bus, Inventory(bus), _settings())
    await hc.start()
    try:
        yield hc
    finally:
        await hc.stop()


async def _outcome(call: asyncio.Future[Any]) -> str | BaseException:
    try:
        return await call
    except KvmmError as exc:
        return exc


async def test_calls_queued_when_the_host_stops_answering_are_refused_with_its_reason(
    private_host: SecondHost, frozen_host: HostConnection
) -> None:
    hc = frozen_host
    await hc.wait_connected(60)
    conn = hc.conn
    with frozen(private_host):
        # WORKERS calls take the workers and wait on the frozen daemon; the rest queue.
        started = [
            asyncio.ensure_future(hc.run(conn.getHostname, kind="read", op=f"hostname {i}"))
            for i in range(WORKERS)
        ]
        queued = [
            asyncio.ensure_future(hc.run(conn.getHostname, kind="read", op=f"queued {i}"))
            for i in range(QUEUED)
        ]
        await hc.wait_status(NOT_RESPONDING, seconds=LONG)
        async with asyncio.timeout(LONG * 2):
            refused = await asyncio.gather(*(_outcome(c) for c in queued))
    for i, err in enumerate(refused):
        assert isinstance(err, HostUnavailable), err
        assert "'kvmm-t-frzq' is not responding" in err.message, err.message
        assert "has not answered" in err.message, err.message
        assert f"queued {i} was not sent" in err.message, err.message
    # The calls that were running get their answer (or a clean error) after the thaw,
    # and the host is connected again.
    async with asyncio.timeout(LONG * 2):
        await asyncio.gather(*(_outcome(c) for c in started))
    await hc.wait_status("connected", seconds=LONG * 2)
    assert await hc.run(lambda: hc.conn.getHostname(), kind="read")


async def test_a_host_whose_daemon_is_frozen_before_it_connects_says_not_responding(
    private_host: SecondHost,
) -> None:
    bus = EventBus()
    hc = HostConnection("kvmm-t-frzc", private_host.uri, bus, Inventory(bus), _settings())
    try:
        with frozen(private_host):
            before = time.time()
            await hc.start()
            await hc.wait_status(NOT_RESPONDING, seconds=LONG)
            assert "has not answered the connection since " in hc.status_reason, hc.status_reason
            assert private_host.uri in hc.status_reason
            # It says since when (the open began), not a fixed duration that turns false
            # as the wait goes on.
            shown = re.search(r"since (\d\d:\d\d:\d\d) UTC \(still waiting\)", hc.status_reason)
            assert shown is not None, hc.status_reason
            seconds = range(int(before), int(time.time()) + 1)
            began = {time.strftime("%H:%M:%S", time.gmtime(t)) for t in seconds}
            assert shown.group(1) in began, (shown.group(1), began)
            with pytest.raises(HostUnavailable, match="'kvmm-t-frzc' is not responding: "):
                await hc.run(lambda: None)
        # Thawed: the open that waited completes, and the host connects.
        await hc.wait_status("connected", seconds=LONG * 2)
        assert hc.status_reason == ""
    finally:
        await hc.stop()


async def test_a_not_responding_hosts_vms_are_stale_from_the_daemons_last_answer(
    private_host: SecondHost, frozen_host: HostConnection
) -> None:
    """The VM rows' stale age counts from the last answer libvirtd gave, not from the
    moment the manager concluded it stopped answering (seconds later); the reason names
    that moment too, so it stays true however long the freeze lasts."""
    hc = frozen_host
    await hc.wait_connected(60)
    assert await hc.run(lambda: hc.conn.getHostname(), kind="read")
    with frozen(private_host):
        await hc.wait_status(NOT_RESPONDING, seconds=LONG)
        stale_since, reason = hc.stale_since, hc.status_reason
        status_since, last_answer_at = hc.status_since, hc.last_answer
    # The last answer came at least `not_responding_seconds` before the manager
    # concluded the daemon had stopped answering (compared, not measured).
    assert stale_since is not None and stale_since == last_answer_at < status_since
    last_answer = time.strftime("%H:%M:%S", time.gmtime(stale_since))
    assert f"has not answered since {last_answer} UTC" in reason, reason
    await hc.wait_status("connected", seconds=LONG * 2)
    assert hc.stale_since is None
