"""Bounded libvirt calls (virt/calls.py through HostConnection.run) on the test driver.

A call that blocks in its worker stands for libvirt not answering: the caller gets a 504
naming the host and the operation at the deadline, the worker is counted as overdue until
it returns, a host whose workers are all overdue refuses calls at once, and another host
keeps its own workers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import pytest

from kvmmanager.core.config import LibvirtSettings
from kvmmanager.core.errors import HostTimeout, HostUnavailable
from kvmmanager.virt.calls import HostWorkers, job_calls
from kvmmanager.virt.connection import HostConnection
from kvmmanager.virt.events import EventBus
from kvmmanager.virt.inventory import Inventory

from .conftest import TESTNODE_URI

SHORT = 0.2  # the deadline under test; every wait below is bounded by generous timeouts


@pytest.fixture
def libvirt_settings() -> LibvirtSettings:
    return LibvirtSettings(
        reconnect_min_seconds=0.05,
        reconnect_max_seconds=0.5,
        deadline_read_seconds=SHORT,
        deadline_lifecycle_seconds=SHORT,
        workers_per_host=2,
    )


@pytest.fixture
async def second_host(
    bus: EventBus, inventory: Inventory, libvirt_settings: LibvirtSettings
) -> AsyncIterator[HostConnection]:
    host = HostConnection("kvmm-t-host-b", TESTNODE_URI, bus, inventory, libvirt_settings)
    await host.start()
    try:
        await host.wait_connected(30)
        yield host
    finally:
        await host.stop()


def _blocker() -> tuple[threading.Event, threading.Event]:
    """(entered, release): a call body waits on `release` like a call to a frozen daemon."""
    return threading.Event(), threading.Event()


def hang(entered: threading.Event, release: threading.Event) -> str:
    entered.set()
    release.wait(60)
    return "late answer"


async def test_a_call_past_its_deadline_answers_504_naming_host_and_operation(testhost):
    entered, release = _blocker()
    try:
        with pytest.raises(HostTimeout) as err:
            await testhost.run(hang, entered, release, kind="read", op="list pools")
        msg = err.value.message
        assert "kvmm-t-host-a" in msg and "list pools" in msg
        assert "may still complete" in msg
        assert err.value.status == 504 and err.value.code == "host_timeout"
        # The worker libvirt still holds is accounted for, and shown.
        assert testhost.status_dict()["overdue_calls"] == 1
    finally:
        release.set()
    await asyncio.wait_for(_until(lambda: not testhost.workers.overdue()), 30)
    assert testhost.status_dict()["overdue_calls"] == 0


async def test_all_workers_overdue_refuses_new_calls_at_once(testhost):
    blockers = [_blocker() for _ in range(2)]
    try:
        for entered, release in blockers:
            with pytest.raises(HostTimeout):
                await testhost.run(hang, entered, release, op="define vm")
        # Nothing is queued behind the stuck workers: refused before any wait.
        with pytest.raises(HostUnavailable) as err:
            await asyncio.wait_for(testhost.run(lambda: 1, op="start vm"), SHORT / 2)
        assert "kvmm-t-host-a" in err.value.message
        assert "start vm was not sent" in err.value.message
    finally:
        for _, release in blockers:
            release.set()
    await asyncio.wait_for(_until(lambda: not testhost.workers.overdue()), 30)
    assert await testhost.run(lambda: testhost.conn.getLibVersion(), kind="read") > 0


async def test_a_queued_call_that_never_started_says_nothing_was_sent(testhost):
    blockers = [_blocker() for _ in range(2)]
    ran = threading.Event()
    try:
        busy = [asyncio.ensure_future(testhost.run(hang, e, r, kind="job")) for e, r in blockers]
        for entered, _ in blockers:
            assert await asyncio.to_thread(entered.wait, 30)
        with pytest.raises(HostTimeout) as err:
            await testhost.run(ran.set, op="undefine vm")
        assert "was not sent; nothing was changed" in err.value.message
    finally:
        for _, release in blockers:
            release.set()
    assert await asyncio.gather(*busy) == ["late answer", "late answer"]
    assert not ran.is_set()  # abandoned before a worker took it: it never ran


async def test_a_hung_host_leaves_another_hosts_workers_alone(testhost, second_host):
    blockers = [_blocker() for _ in range(2)]
    try:
        for entered, release in blockers:
            with pytest.raises(HostTimeout):
                await testhost.run(hang, entered, release)
        assert await second_host.run(lambda: second_host.conn.getLibVersion(), kind="read")
        assert second_host.status_dict()["overdue_calls"] == 0
    finally:
        for _, release in blockers:
            release.set()


async def test_calls_inside_a_job_have_no_per_call_deadline(testhost):
    entered, release = _blocker()
    with job_calls():
        call = asyncio.ensure_future(testhost.run(hang, entered, release))
    assert await asyncio.to_thread(entered.wait, 30)
    await asyncio.sleep(SHORT * 2)  # past the lifecycle deadline: still waiting
    assert not call.done()
    release.set()
    assert await asyncio.wait_for(call, 30) == "late answer"


async def _until(cond) -> None:
    while not cond():  # noqa: ASYNC110 - polling state
        await asyncio.sleep(0.01)


async def test_a_call_that_found_no_free_worker_says_what_holds_them() -> None:
    """One VM's calls stuck (e.g. behind its hung QEMU monitor) can hold every worker of
    its host; a call about anything else then times out waiting for a worker, and its
    message names the calls holding them."""
    workers = HostWorkers("kvmm-t-busy", 1)
    taken, release = threading.Event(), threading.Event()

    def stuck() -> bool:
        taken.set()
        return release.wait(60)

    try:
        held = asyncio.ensure_future(
            workers.call(stuck, op="suspend 'kvmm-t-stuck'", kind="lifecycle", deadline=None)
        )
        assert await asyncio.to_thread(taken.wait, 30)
        with pytest.raises(HostTimeout) as info:
            await workers.call(lambda: None, op="read 'kvmm-t-other'", kind="read", deadline=0.05)
        msg = info.value.message
        assert "read 'kvmm-t-other' waited 0.05 s for a free libvirt worker" in msg, msg
        assert "busy with: suspend 'kvmm-t-stuck' (" in msg, msg
    finally:
        release.set()
    assert await held is True
    workers.shutdown()


async def test_a_vm_named_by_name_and_by_uuid_counts_under_one_cap() -> None:
    """The per-VM cap (calls_per_vm) is per VM, not per spelling: a call naming the VM by
    UUID waits behind one naming it by name, without taking a worker, while a call about
    another VM runs at once; once the stuck call is past its deadline, the waiting one
    is refused naming the VM (no libvirt here: the calls are threads that block)."""
    keys = {"kvmm-t-capvm": "uuid-1", "uuid-1": "uuid-1"}
    workers = HostWorkers("kvmm-t-cap", 3, per_vm=1, vm_key=lambda vm: keys.get(vm, vm))
    taken, release = threading.Event(), threading.Event()

    def stuck() -> str:
        taken.set()
        release.wait(60)
        return "late"

    try:
        held = asyncio.ensure_future(
            workers.call(stuck, op="suspend", kind="lifecycle", deadline=0.3, vm="kvmm-t-capvm")
        )
        assert await asyncio.to_thread(taken.wait, 30)
        same = asyncio.ensure_future(
            workers.call(lambda: "ran", op="resume", kind="lifecycle", deadline=30, vm="uuid-1")
        )
        other = await workers.call(
            lambda: "other", op="read", kind="read", deadline=30, vm="kvmm-t-other"
        )
        assert other == "other"
        with pytest.raises(HostTimeout):
            await held
        with pytest.raises(HostUnavailable) as info:
            await same
        msg = info.value.message
        assert "vm 'uuid-1' on host 'kvmm-t-cap' is not answering" in msg, msg
        assert "resume was not sent" in msg and "suspend (" in msg, msg
    finally:
        release.set()
    workers.shutdown()


async def test_a_vm_with_an_overdue_call_refuses_new_calls_at_once_until_it_returns() -> None:
    """A VM with one call past its deadline and still running (its QEMU monitor hung)
    refuses every new call at once, though its cap (2) has a free place: sent, the new
    call would only wait on the VM's job lock too. The refusal names the VM, the host,
    the operation and the stuck call; once the stuck call returns, calls flow again."""
    workers = HostWorkers("kvmm-t-ovd", 3, per_vm=2)
    taken, release = threading.Event(), threading.Event()
    sent: list[str] = []

    def stuck() -> str:
        taken.set()
        release.wait(60)
        return "late"

    try:
        held = asyncio.ensure_future(
            workers.call(stuck, op="suspend", kind="lifecycle", deadline=0.1, vm="kvmm-t-ovdvm")
        )
        assert await asyncio.to_thread(taken.wait, 30)
        with pytest.raises(HostTimeout):
            await held
        assert [c.op for c in workers.overdue()] == ["suspend"]
        with pytest.raises(HostUnavailable) as info:
            await workers.call(
                lambda: sent.append("reboot"),
                op="reboot",
                kind="lifecycle",
                deadline=60,
                vm="kvmm-t-ovdvm",
            )
        msg = info.value.message
        assert "vm 'kvmm-t-ovdvm' on host 'kvmm-t-ovd' is not answering" in msg, msg
        assert "1 of its libvirt calls is still running past its deadline (suspend (" in msg
        assert "reboot was not sent" in msg, msg
        assert info.value.details["stuck_calls"] == ["suspend"]
        assert sent == []
        # Another VM of the host is not affected.
        assert (
            await workers.call(
                lambda: "other", op="read", kind="read", deadline=30, vm="kvmm-t-ovdother"
            )
            == "other"
        )
    finally:
        release.set()
    async with asyncio.timeout(30):
        await _until(lambda: not workers.overdue())
        assert (
            await workers.call(
                lambda: "ran", op="resume", kind="lifecycle", deadline=30, vm="kvmm-t-ovdvm"
            )
            == "ran"
        )
    workers.shutdown()


async def test_a_host_with_its_only_worker_overdue_says_so_in_the_singular() -> None:
    workers = HostWorkers("kvmm-t-one", 1)
    taken, release = threading.Event(), threading.Event()

    def stuck() -> str:
        taken.set()
        release.wait(60)
        return "late"

    try:
        with pytest.raises(HostTimeout):
            await workers.call(stuck, op="suspend", kind="lifecycle", deadline=0.1)
        with pytest.raises(HostUnavailable) as info:
            await workers.call(lambda: None, op="read", kind="read", deadline=30)
        msg = info.value.message
        assert "its only libvirt worker is still waiting for a call past its deadline" in msg
        assert "(suspend, " in msg and "read was not sent" in msg, msg
    finally:
        release.set()
    workers.shutdown()
