"""Pending (next-boot) changes of a running VM on the real libvirtd: a raised maximum is
listed until a power cycle applies it, and a memory size within the maximum (a balloon
target) is not "pending a reboot" in a guest without a balloon driver (issue 15)."""

from __future__ import annotations

import uuid
from typing import Any

import libvirt
import pytest

from kvmmanager.services.vms import edit as vm_edit
from kvmmanager.services.vms.edit import _set_memory, _set_vcpus
from kvmmanager.services.vms.pending import PendingChanges, _pending
from kvmmanager.virt.xml.devices import MemBalloon
from kvmmanager.virt.xml.domain import Domain

pytestmark = [pytest.mark.libvirtd, pytest.mark.vm]
MIB = 1024


def test_raised_maximums_are_pending_then_applied_by_a_power_cycle(
    libvirtd_conn: libvirt.virConnect, libvirtd_cleanup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SeaBIOS with no disk has no balloon driver: the guest never gives memory back.
    monkeypatch.setattr(vm_edit, "BALLOON_WAIT_SECONDS", 0.2)
    name = f"kvmm-t-pend-{uuid.uuid4().hex[:6]}"
    spec = Domain(type="qemu", name=name, memory=1024 * MIB, current_memory=1024 * MIB, vcpus=1)
    spec.os.os_type, spec.os.arch = "hvm", "x86_64"
    spec.devices.memballoon = MemBalloon(model="virtio")
    dom = libvirtd_conn.defineXML(spec.to_xml())
    try:
        dom.create()
        # Hardware -> Maximum memory 2048, Memory 512, Maximum vCPUs 2 -> Apply.
        _set_vcpus(dom, None, 2)
        _set_memory(dom, 512, 2048)
        assert _pending(dom) == PendingChanges(
            max_vcpus=2, max_memory_kib=2048 * MIB, balloon_target_kib=512 * MIB
        )
        # Force off -> Start: the next boot has exactly the applied configuration.
        dom.destroy()
        dom.create()
        live = Domain.from_xml(dom.XMLDesc(0))
        assert (live.memory, live.vcpus, live.online_vcpus) == (2048 * MIB, 2, 1)
        pending = _pending(dom)
        assert not pending.any, pending
    finally:
        libvirtd_cleanup.drop_vm(name)
