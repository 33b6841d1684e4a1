"""An operator must not pass the host's own devices to a guest (issue 14).

On a host without an IOMMU, the controller of the host's root disk and the NIC that
carries its traffic were listed as free and accepted for passthrough. This test runs
against the real libvirtd: it finds those devices through libvirt's node device tree
(the parent PCI device of a disk the host sees, of a NIC whose link is up), attaches them
as an operator to a shut-off VM of its own (the VM is never started: only its
definition would change), and checks the refusal and the listing's reason.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import libvirt
import pytest
from fastapi.testclient import TestClient
from lxml import etree
from tests.libvirtd_pools import LIBVIRTD_URI

from kvmmanager.core.config import Settings
from kvmmanager.virt.xml.domain import Domain

pytestmark = pytest.mark.libvirtd

PREFIX = "kvmm-t-sechost-hd-"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.libvirt.default_uri = LIBVIRTD_URI
    return settings


def _nodes() -> dict[str, Any]:
    """Node device name -> its XML element, read through libvirt."""
    conn = libvirt.open(LIBVIRTD_URI)
    with contextlib.closing(conn):
        roots = [etree.fromstring(d.XMLDesc(0)) for d in conn.listAllDevices(0)]
    return {el.findtext("name"): el for el in roots}


def _pci_above(nodes: dict[str, Any], child: Any) -> str | None:
    parent = nodes.get(child.findtext("parent") or "")
    while parent is not None and parent.find("capability[@type='pci']") is None:
        parent = nodes.get(parent.findtext("parent") or "")
    return None if parent is None else parent.findtext("name")


def host_devices() -> dict[str, tuple[str, str]]:
    """case -> (PCI node device name, what its refusal must name), from libvirt."""
    nodes = _nodes()
    found: dict[str, tuple[str, str]] = {}
    for el in nodes.values():
        block = el.findtext("capability[@type='storage']/block")
        iface = el.findtext("capability[@type='net']/interface")
        link = el.find("capability[@type='net']/link")
        up = link is not None and link.get("state") == "up"
        pci = _pci_above(nodes, el)
        if pci is None:
            continue
        if block and "disk-controller" not in found:
            found["disk-controller"] = (pci, block)
        if iface and up and "nic" not in found:
            found["nic"] = (pci, iface)
    return found


@pytest.fixture
def vm(client: TestClient, role_client: Callable[[str], TestClient]) -> Iterator[tuple]:
    host = client.app.state.manager.registry.get("local")  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while not host.connected:
        assert time.monotonic() < deadline, host.status_reason
        time.sleep(0.05)
    operator = role_client("operator")
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    dom = Domain(type="qemu", name=name, memory=64 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch, dom.os.machine = "hvm", "x86_64", "pc"
    dom.manager_metadata.owner = operator.kvmm_username  # type: ignore[attr-defined]
    conn = libvirt.open(LIBVIRTD_URI)
    try:
        uuid_ = conn.defineXML(dom.to_xml()).UUIDString()
        manager = client.app.state.manager  # type: ignore[attr-defined]
        client.portal.call(manager.vms.refresh, "local", uuid_)  # type: ignore[union-attr]
        yield operator, name
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.lookupByName(name).undefine()
        conn.close()


CASES = ["disk-controller", "nic"]


@pytest.mark.parametrize("case", CASES)
def test_the_hosts_own_disk_controller_and_nic_are_refused_for_passthrough(
    vm: tuple[TestClient, str], case: str
) -> None:
    operator, name = vm
    devices = host_devices()
    if case not in devices:
        pytest.skip(f"libvirt shows no {case} of the host on this machine")
    device, what = devices[case]
    listed = {d["name"]: d for d in operator.get("/api/hosts/local/devices").json()}
    r = operator.post(f"/api/hosts/local/vms/{name}/hostdevs", json={"device": device})
    conn = libvirt.open(LIBVIRTD_URI)
    with contextlib.closing(conn):
        xml = conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "<hostdev" not in xml, f"the VM was given the host's {case} {device}"
    assert r.status_code == 409, r.text
    assert what in r.json()["error"]["message"] and "host" in r.json()["error"]["message"]
    assert what in (listed[device]["refused"] or ""), listed[device]


def test_a_pci_device_without_an_iommu_group_is_refused(vm: tuple[TestClient, str]) -> None:
    operator, name = vm
    no_group = [d for d in operator.get("/api/hosts/local/devices", params={"kind": "pci"}).json()
                if d["iommu_group"] is None]  # fmt: skip
    if not no_group:
        pytest.skip("every PCI device of this host has an IOMMU group")
    for dev in no_group:
        assert dev["refused"], dev
    plain = [d for d in no_group if "IOMMU" in d["refused"]]
    if not plain:
        pytest.skip("every PCI device without an IOMMU group is refused for another reason")
    r = operator.post(f"/api/hosts/local/vms/{name}/hostdevs", json={"device": plain[0]["name"]})
    assert r.status_code == 409 and "IOMMU group" in r.json()["error"]["message"], r.text
