"""Host devices on a test-driver node file with PCI and USB devices (hostdev_node.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.kvmmanager.services.hostdev_node import BRIDGE, GPU, GPU_AUDIO, NIC, ROOT_HUB, STICK
from tests.kvmmanager.services.hostdev_node import write as write_node

from kvmmanager.core.config import Settings
from kvmmanager.core.errors import Conflict, NotFound, Unsupported
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.validate import validate_xml, validator_available


def _vm_xml(name: str) -> str:
    dom = Domain(type="test", name=name, memory=131072)
    dom.os.os_type, dom.os.arch = "hvm", "x86_64"
    return dom.to_xml()


@pytest.fixture
async def node_manager(settings: Settings, tmp_path: Path) -> AsyncIterator[Any]:
    """A Manager whose `local` host is a private test-driver instance with node devices
    (it and everything defined on it vanish with the manager's connection)."""
    from kvmmanager.services.manager import Manager

    settings.libvirt.default_uri = write_node(tmp_path / "node.xml")
    m = Manager(settings)
    await m.start()
    try:
        await m.registry.get("local").wait_connected()
        yield m
    finally:
        await m.stop()


async def _define(m: Any, name: str) -> None:
    hc = m.registry.get("local")
    await hc.run(lambda: hc.conn.defineXML(_vm_xml(name)))
    await m.vms.refresh("local", await hc.run(lambda: hc.conn.lookupByName(name).UUIDString()))


async def _xml(m: Any, name: str, flags: int = 0) -> str:
    hc = m.registry.get("local")
    return await hc.run(lambda: hc.conn.lookupByName(name).XMLDesc(flags))


async def test_lists_pci_and_usb_devices_with_iommu_groups(node_manager: Any) -> None:
    devs = {d.name: d for d in await node_manager.hostdevs.list("local")}
    assert set(devs) == {GPU, GPU_AUDIO, NIC, BRIDGE, STICK, ROOT_HUB}
    gpu = devs[GPU]
    assert (gpu.kind, gpu.address, gpu.vendor_id, gpu.product_id) == (
        "pci", "0000:01:00.0", "0x10de", "0x1b80",
    )  # fmt: skip
    assert gpu.class_name == "display controller" and gpu.pci_class == "0x030000"
    assert gpu.iommu_group == 1 and gpu.iommu_members == ["0000:01:00.1"]
    assert gpu.refused is None and gpu.attached_to == []
    assert "PCI bridge" in (devs[BRIDGE].refused or "")
    assert "root hub" in (devs[ROOT_HUB].refused or "")
    stick = devs[STICK]
    assert (stick.kind, stick.address, stick.vendor_name) == ("usb", "bus 1 device 2", "ACME")
    assert [d.name for d in await node_manager.hostdevs.list("local", "usb")] == [
        ROOT_HUB,
        STICK,
    ]


async def test_refusals_name_the_reason(node_manager: Any) -> None:
    m = node_manager
    await _define(m, "kvmm-t-hd1")
    with pytest.raises(Conflict, match="root hub"):
        await m.hostdevs.attach("local", "kvmm-t-hd1", ROOT_HUB)
    with pytest.raises(Conflict, match="PCI bridge"):
        await m.hostdevs.attach("local", "kvmm-t-hd1", BRIDGE)
    with pytest.raises(Conflict, match=r"IOMMU group 1 with 0000:01:00\.1") as exc:
        await m.hostdevs.attach("local", "kvmm-t-hd1", GPU)
    assert "group=true" in exc.value.message
    with pytest.raises(NotFound, match="host 'local' has no device 'pci_0000_09_00_0'"):
        await m.hostdevs.attach("local", "kvmm-t-hd1", "pci_0000_09_00_0")
    with pytest.raises(NotFound):
        await m.hostdevs.attach("local", "kvmm-t-nope", NIC)
    # Nothing was written by any refusal.
    assert "<hostdev" not in await _xml(m, "kvmm-t-hd1")


async def test_attach_group_usb_and_detach(node_manager: Any) -> None:
    m = node_manager
    await _define(m, "kvmm-t-hd1")
    await _define(m, "kvmm-t-hd2")
    res = await m.hostdevs.attach("local", "kvmm-t-hd1", GPU, group=True)
    assert res["details"]["devices"] == [GPU, GPU_AUDIO] and res["next_boot"] is True
    await m.hostdevs.attach("local", "kvmm-t-hd1", STICK)  # by vendor/product
    await m.hostdevs.attach("local", "kvmm-t-hd2", NIC)
    xml = await _xml(m, "kvmm-t-hd1")
    dom = Domain.from_xml(xml)
    assert [h.pci_address for h in dom.devices.hostdevs if h.type == "pci"] == [
        (0, 1, 0, 0),
        (0, 1, 0, 1),
    ]
    assert all(h.managed for h in dom.devices.hostdevs)
    assert [h.usb_id for h in dom.devices.hostdevs if h.type == "usb"] == [("0x1234", "0x5678")]
    if validator_available():
        validate_xml(xml, "domain")
    # Taken devices are refused for another VM, naming the VM that has them.
    with pytest.raises(Conflict, match="already given to vm 'kvmm-t-hd1'"):
        await m.hostdevs.attach("local", "kvmm-t-hd2", STICK, usb_match="address")
    with pytest.raises(Conflict, match="already has device"):
        await m.hostdevs.attach("local", "kvmm-t-hd2", NIC)
    listed = {d.name: d.attached_to for d in await m.hostdevs.list("local")}
    assert listed[GPU] == listed[GPU_AUDIO] == listed[STICK] == ["kvmm-t-hd1"]
    assert listed[NIC] == ["kvmm-t-hd2"]
    assert [d.name for d in await m.hostdevs.of_vm("local", "kvmm-t-hd2")] == [NIC]
    # Detach, then the stick can go to the other VM pinned to its bus/device.
    await m.hostdevs.detach("local", "kvmm-t-hd1", STICK)
    await m.hostdevs.attach("local", "kvmm-t-hd2", STICK, usb_match="address")
    dom2 = Domain.from_xml(await _xml(m, "kvmm-t-hd2"))
    assert [h.usb_address for h in dom2.devices.hostdevs if h.type == "usb"] == [(1, 2)]
    with pytest.raises(NotFound, match="does not have device"):
        await m.hostdevs.detach("local", "kvmm-t-hd1", STICK)


async def test_running_vm_live_attach_refusal_keeps_the_definition(node_manager: Any) -> None:
    """The test driver has no device hotplug: libvirt's reason comes back, nothing changes."""
    m = node_manager
    await _define(m, "kvmm-t-hd1")
    hc = m.registry.get("local")
    await hc.run(lambda: hc.conn.lookupByName("kvmm-t-hd1").create())
    with pytest.raises(Unsupported, match=r"libvirt refused to attach .* not supported"):
        await m.hostdevs.attach("local", "kvmm-t-hd1", NIC)
    assert "<hostdev" not in await _xml(m, "kvmm-t-hd1", 2)  # VIR_DOMAIN_XML_INACTIVE
