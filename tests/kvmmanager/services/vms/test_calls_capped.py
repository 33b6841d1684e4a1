"""Every libvirt call a service makes about one VM names it (`vm=`), so the VM's cap of
calls in flight (virt/calls.py) covers it: while one of the VM's calls is past its
deadline and still running (its QEMU monitor hung), these are refused at once with 503
naming the VM and the stuck call, instead of being sent into the hung VM to wait out
their own deadline. On the test driver; the stuck call is a thread that blocks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from kvmmanager.core.errors import HostTimeout, HostUnavailable
from kvmmanager.services.vms.spec import NicSpec


async def test_vm_scoped_service_calls_are_refused_while_the_vm_has_an_overdue_call(
    manager: Any,
) -> None:
    hc = manager.registry.get("local")
    await hc.wait_connected(30)
    vm = manager.inventory.domain("local", "test")
    taken, release = threading.Event(), threading.Event()

    def stuck() -> bool:
        taken.set()
        return release.wait(60)

    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "template get": lambda: manager.templates.get("local", "test"),
        "template mark": lambda: manager.templates.mark("local", "test", True),
        "host device attach": lambda: manager.hostdevs.attach("local", "test", "pci_0000_00_1f_2"),
        "media insert": lambda: manager.vms.edit.insert_media(
            "local", "test", "default-pool", "kvmm-t-capped.iso"
        ),
        "nic attach": lambda: manager.vms.edit.attach_nic(
            "local", "test", NicSpec(network="default")
        ),
        "agent ISO eject": lambda: manager.iso.installer.eject("local", "test"),
    }
    try:
        with pytest.raises(HostTimeout):
            await hc.run(stuck, op="kvmm-t-stuck-suspend", deadline=0.1, vm=vm.uuid)
        assert taken.is_set()
        for what, call in calls.items():
            with pytest.raises(HostUnavailable) as info:
                await call()
            msg = info.value.message
            assert "vm 'test' on host 'local' is not answering" in msg, (what, msg)
            assert "(kvmm-t-stuck-suspend (" in msg, (what, msg)
    finally:
        release.set()
    async with asyncio.timeout(30):
        while hc.workers.overdue():  # noqa: ASYNC110 - polling state
            await asyncio.sleep(0.01)
    assert (await manager.templates.get("local", "test"))["name"] == "test"
