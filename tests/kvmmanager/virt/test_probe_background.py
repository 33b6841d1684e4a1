"""The accelerator probe in the background: a caller waits for it only so long, then gets
the host's last known answer (saying so) or a clear 503; abandoned probe guests (owner
gone, or our own from an interrupted probe) are swept, live managers' never."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace

import libvirt
import pytest

from kvmmanager.core.config import LibvirtSettings
from kvmmanager.core.errors import HostUnavailable
from kvmmanager.virt import probe
from kvmmanager.virt.owner import Owner, process_start, this_process
from kvmmanager.virt.probe import host_accel, probe_guest_name, start_probe, sweep_probe_guests
from kvmmanager.virt.xml.domain import Domain

WAIT = 0.2


@pytest.fixture
def libvirt_settings() -> LibvirtSettings:
    # One worker, so a call holding it keeps the probe queued (a slow libvirt).
    return LibvirtSettings(reconnect_min_seconds=0.05, workers_per_host=1)


async def _hold_the_worker(host) -> tuple[threading.Event, asyncio.Future]:
    release, entered = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(60)

    busy = asyncio.ensure_future(host.run(hold, kind="job"))
    assert await asyncio.to_thread(entered.wait, 30)
    return release, busy


async def test_no_earlier_answer_refuses_with_503_instead_of_waiting(testhost):
    release, busy = await _hold_the_worker(testhost)
    try:
        with pytest.raises(HostUnavailable) as err:
            await host_accel(testhost, wait=WAIT)
        assert "kvmm-t-host-a" in err.value.message
        assert "probe" in err.value.message and "still running" in err.value.message
    finally:
        release.set()
        await busy
    # The probe went on in the background and answers the next caller.
    assert (await host_accel(testhost, wait=30)).source == "probe"


async def test_a_slow_probe_falls_back_to_the_last_known_answer(testhost):
    first = await host_accel(testhost, wait=30)
    testhost.cache.clear()  # what a reconnect does: this connection has no answer yet
    release, busy = await _hold_the_worker(testhost)
    try:
        info = await host_accel(testhost, wait=WAIT)
    finally:
        release.set()
        await busy
    assert info.accel == first.accel and info.source == "last known"
    assert "last known answer" in info.reason and "still running" in info.reason


async def test_start_probe_runs_once_per_connection(testhost):
    task = start_probe(testhost)
    assert start_probe(testhost) is task
    assert (await task).source == "probe"


async def test_a_probe_made_on_another_event_loop_answers_this_one(testhost):
    # The web test client and the CLI run their own loops over one host: a task of another
    # loop cannot be awaited here (CI stop 14: "attached to a different loop", a 500).
    first = await host_accel(testhost, wait=30)

    def other_loop() -> probe.AccelInfo:
        return asyncio.run(host_accel(testhost, wait=30))

    again = await asyncio.to_thread(other_loop)
    assert (again.accel, again.source) == (first.accel, "probe")


async def test_a_probe_still_running_on_another_event_loop_does_not_break_this_one(testhost):
    # The web test client's portal loop started the probe and is still waiting on it when a
    # request on another loop asks: awaiting that task here raised "attached to a different
    # loop" (CI stop 14, a 500 on the dashboard). This loop starts its own probe instead.
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    release, busy = await _hold_the_worker(testhost)
    try:

        async def start_there() -> None:
            start_probe(testhost)

        asyncio.run_coroutine_threadsafe(start_there(), other).result(30)
        assert testhost.cache["accel"].get_loop() is other
        answer = asyncio.ensure_future(host_accel(testhost, wait=30))
        await asyncio.sleep(0.1)
    finally:
        release.set()
        await busy
    try:
        assert (await answer).source == "probe"
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join(30)


def _guest_xml(name: str) -> str:
    dom = Domain(type="test", name=name, memory=128 * 1024, current_memory=128 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch = "hvm", "x86_64"
    return dom.to_xml()


@pytest.fixture
def owners() -> Iterator[tuple[Owner, Owner]]:
    """(a live process of this machine, one that has exited), as probe guest owners."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        live = replace(this_process(), pid=sleeper.pid, start=process_start(sleeper.pid) or 0)
        dead = replace(this_process(), pid=gone.pid, start=process_start(gone.pid) or 0)
        gone.kill()
        gone.wait(30)
        yield live, dead
    finally:
        sleeper.kill()
        sleeper.wait(30)


async def test_sweep_removes_only_provably_abandoned_probe_guests(testhost, owners):
    live_owner, dead_owner = owners
    try:
        names = {
            "dead": probe_guest_name(dead_owner),
            "live": probe_guest_name(live_owner),
            "mine_in_use": probe_guest_name(),
            "mine_left": probe_guest_name(),
            "old_style": probe.PROBE_PREFIX + "0a1b2c3d",
            "other_machine": probe_guest_name(replace(dead_owner, machine="00000000")),
        }
        with probe._in_use_lock:
            probe._in_use.add(names["mine_in_use"])

        def make_and_sweep(conn: libvirt.virConnect) -> tuple[list[str], set[str]]:
            for n in names.values():
                conn.createXML(_guest_xml(n), 0)
            removed = sweep_probe_guests(conn)
            return removed, {d.name() for d in conn.listAllDomains(0)}

        removed, left = await testhost.run(lambda: make_and_sweep(testhost.conn))
    finally:
        with probe._in_use_lock:
            probe._in_use.discard(names["mine_in_use"])
    assert sorted(removed) == sorted([names["dead"], names["mine_left"]])
    for kept in ("live", "mine_in_use", "old_style", "other_machine"):
        assert names[kept] in left, kept
    assert names["dead"] not in left and names["mine_left"] not in left
