"""User-mode networking on this host's real libvirt (issue 17 item 5): a VM created with a
user-mode NIC is defined and runs. libvirt 9.0.0 here refuses `<backend type='passt'>`
("Invalid value for attribute 'type' in element 'backend'") and its domain capabilities
list no passt backend, so the NIC uses QEMU's slirp; where libvirt lists passt it is used."""

from __future__ import annotations

import uuid

import libvirt
import pytest
from tests.kvmmanager.conftest import drop_vm

from kvmmanager.services.vms import builder as vm_builder
from kvmmanager.services.vms.builder import NicSpec, VmSpec
from kvmmanager.services.vms.service import host_caps
from kvmmanager.virt.xml.domain import Domain

pytestmark = pytest.mark.libvirtd


def test_a_vm_with_a_user_nic_is_created_and_runs() -> None:
    name = f"kvmm-t-usernet-{uuid.uuid4().hex[:8]}"
    conn = libvirt.open("qemu:///system")
    try:
        caps = host_caps(conn, "qemu")
        assert caps.passt == vm_builder.passt_offered(conn, "qemu")
        spec = VmSpec(name=name, memory_mib=64, nics=[NicSpec(user=True)], start=True)
        vm_builder.create_blocking(conn, spec, "qemu", caps)
        dom = conn.lookupByName(name)
        assert dom.isActive()
        [nic] = Domain.from_xml(dom.XMLDesc(0)).devices.interfaces
        assert nic.type == "user"
        assert nic.backend_type == ("passt" if caps.passt else None)
    finally:
        drop_vm(name)
        conn.close()
