"""One VM whose QEMU monitor is frozen (its qemu process SIGSTOPped) must not take every
libvirt worker of its host: the host's other VMs keep answering (virt/calls.py, the
per-VM cap `calls_per_vm`).

Real QEMU on the shared qemu:///system: two tiny transient TCG guests of this test's own
(no disk, idling in SeaBIOS), one HostConnection in this process with 4 workers and a
short lifecycle deadline. `suspend` talks to the monitor, so on the frozen VM the first
call waits for QEMU and the next ones for the domain's job lock inside libvirtd. Outcomes
are read from the answers, never from a clock; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import libvirt
import pytest

from kvmmanager.core.config import LibvirtSettings
from kvmmanager.core.errors import HostTimeout, HostUnavailable, KvmmError
from kvmmanager.virt.connection import HostConnection
from kvmmanager.virt.events import EventBus
from kvmmanager.virt.inventory import Inventory
from kvmmanager.virt.xml.domain import Domain

pytestmark = [pytest.mark.libvirtd]

URI = "qemu:///system"
PREFIX = "kvmm-t-frzvm-"
WORKERS = 4
ON_FROZEN_VM = 4  # as many calls as the host has workers


def _settings() -> LibvirtSettings:
    return LibvirtSettings(
        deadline_read_seconds=5.0,
        deadline_lifecycle_seconds=2.0,
        heartbeat_seconds=0.5,
        not_responding_seconds=3.0,
        workers_per_host=WORKERS,
        calls_per_vm=2,
        reconnect_min_seconds=0.1,
        accel="tcg",
    )


def _tiny_guest_xml(name: str) -> str:
    dom = Domain(type="qemu", name=name, memory=32 * 1024, current_memory=32 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch = "hvm", "x86_64"
    return dom.to_xml()


def _qemu_pid(name: str) -> int:
    return int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())


@pytest.fixture
def two_guests() -> Iterator[tuple[str, str]]:
    """(the VM to freeze, a healthy VM beside it), both running; removed afterwards, the
    frozen one thawed first whatever happens."""
    conn = libvirt.open(URI)
    tag = uuid.uuid4().hex[:8]
    names = (f"{PREFIX}{tag}-stuck", f"{PREFIX}{tag}-ok")
    made: list[libvirt.virDomain] = []
    try:
        for name in names:
            made.append(conn.createXML(_tiny_guest_xml(name), 0))
        yield names
    finally:
        for dom in made:
            with contextlib.suppress(OSError, ValueError):
                os.kill(_qemu_pid(dom.name()), signal.SIGCONT)
            with contextlib.suppress(libvirt.libvirtError):  # already gone
                dom.destroy()
        conn.close()


@pytest.fixture
async def host() -> AsyncIterator[HostConnection]:
    bus = EventBus()
    hc = HostConnection("kvmm-t-frzvm", URI, bus, Inventory(bus), _settings())
    await hc.start()
    try:
        await hc.wait_connected(60)
        yield hc
    finally:
        await hc.stop()


async def _outcome(call: asyncio.Future[object]) -> object:
    try:
        return await call
    except KvmmError as exc:
        return exc


async def test_a_vm_with_a_frozen_monitor_does_not_starve_the_other_vms_of_its_host(
    two_guests: tuple[str, str], host: HostConnection
) -> None:
    stuck, healthy = two_guests
    conn = host.conn
    pid = _qemu_pid(stuck)
    os.kill(pid, signal.SIGSTOP)
    try:
        calls = [
            asyncio.ensure_future(
                host.run(
                    lambda: conn.lookupByName(stuck).suspend(),
                    op=f"suspend '{stuck}' #{i}",
                    vm=stuck,
                )
            )
            for i in range(ON_FROZEN_VM)
        ]
        async with asyncio.timeout(60):
            outcomes = [await _outcome(c) for c in calls]

        # The VM's own calls: two ran and passed their deadline; the others never took a
        # worker and were refused naming the VM, the host and the operation.
        timed_out = [o for o in outcomes if isinstance(o, HostTimeout)]
        refused = [o for o in outcomes if isinstance(o, HostUnavailable)]
        assert len(timed_out) == 2, outcomes
        assert len(refused) == ON_FROZEN_VM - 2, outcomes
        for err in refused:
            assert f"vm '{stuck}'" in err.message and "kvmm-t-frzvm" in err.message
            assert "was not sent" in err.message and f"suspend '{stuck}'" in err.message
            assert err.details["vm"] == stuck

        # The healthy VM of the same host answers, while the frozen VM's calls still hold
        # their workers (they return only when QEMU does).
        async with asyncio.timeout(60):
            name = await host.run(
                lambda: conn.lookupByName(healthy).name(), kind="read", vm=healthy
            )
            state = await host.run(
                lambda: conn.lookupByName(healthy).state()[0], kind="read", vm=healthy
            )
        assert name == healthy
        assert state == libvirt.VIR_DOMAIN_RUNNING
        assert len(host.workers.overdue()) == 2
        assert host.connected

        # A further call on the frozen VM is refused at once, with the stuck calls named.
        with pytest.raises(HostUnavailable) as again:
            await host.run(lambda: conn.lookupByName(stuck).resume(), op="resume", vm=stuck)
        assert f"suspend '{stuck}'" in again.value.message
    finally:
        os.kill(pid, signal.SIGCONT)
