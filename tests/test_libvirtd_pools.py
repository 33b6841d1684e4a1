"""The shared teardown helpers leave nothing on the shared libvirtd."""

from __future__ import annotations

import contextlib
import uuid

import libvirt
import pytest
from tests.kvmmanager.conftest import drop_vm
from tests.libvirtd_pools import LIBVIRTD_URI, qcow2_domain_xml

pytestmark = pytest.mark.libvirtd


def test_drop_vm_removes_a_vm_that_carries_snapshot_metadata() -> None:
    # A backup leaves checkpoints and a snapshot test leaves snapshots: a plain undefine()
    # refuses such a VM, and 20 README-example VMs had piled up on the shared host that way.
    name = f"kvmm-t-drop-{uuid.uuid4().hex[:6]}"
    conn = libvirt.open(LIBVIRTD_URI)
    try:
        dom = conn.defineXML(qcow2_domain_xml(name, "/nonexistent/kvmm-t-drop.qcow2"))
        dom.snapshotCreateXML(
            "<domainsnapshot><name>s1</name><state>shutoff</state>"
            f"<creationTime>1700000000</creationTime>{dom.XMLDesc()}</domainsnapshot>",
            libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE,
        )
        drop_vm(name)
        assert name not in conn.listDefinedDomains()
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.lookupByName(name).undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        conn.close()
