"""Export/import as libvirt XML on the test driver: rename on clash, new identity,
network and pool remapping, clear refusals naming the field; generated XML validates."""

from __future__ import annotations

import re
import uuid

import libvirt
import pytest

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound
from kvmmanager.services.portability.import_plan import ImportOptions
from kvmmanager.services.vms.spec import DiskSpec, NicSpec, VmSpec
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.validate import validate_xml, validator_available

POOL = "default-pool"


def _cleanup() -> None:
    conn = libvirt.open("test:///default")
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith("kvmm-t-ops-"):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        for vol in conn.storagePoolLookupByName(POOL).listAllVolumes():
            if vol.name().startswith("kvmm-t-ops-"):
                vol.delete(0)
        for net in conn.listAllNetworks():
            if net.name().startswith("kvmm-t-ops-"):
                if net.isActive():
                    net.destroy()
                net.undefine()
    finally:
        conn.close()


def _diskless(xml: str) -> str:
    """The VM's XML without its disks: imported next to the source, a disk would be the
    source's own writable disk, which an import refuses to share (test below)."""
    return re.sub(r"<disk\b.*?</disk>", "", xml, flags=re.S)


@pytest.fixture
async def source_vm(manager):
    """A VM with a 1 GiB disk in `default-pool`, a NIC on `default` and a tag."""
    await manager.registry.get("local").wait_connected(30)
    name = f"kvmm-t-ops-{uuid.uuid4().hex[:8]}"
    spec = VmSpec(
        name=name,
        memory_mib=64,
        tags=["exported"],
        disks=[DiskSpec(pool=POOL, size_gib=1)],
        nics=[NicSpec(network="default")],
    )
    res = await manager.vms.create("local", spec)
    yield res["vm"]
    _cleanup()


async def test_export_then_import_renames_on_clash_and_keeps_metadata(manager, source_vm):
    xml = await manager.export.export_xml("local", source_vm.name)
    exported = Domain.from_xml(xml)
    assert exported.name == source_vm.name
    assert exported.manager_metadata.tags == ["exported"]
    assert "passwd" not in xml

    # Next to the source, its writable disk would be shared by two VMs: refused, saying
    # how to get a copy (issue 17).
    with pytest.raises(Conflict) as err:
        await manager.export.import_xml("local", xml)
    assert err.value.field == "xml" and "share" in err.value.message
    xml = _diskless(xml)

    res = await manager.export.import_xml("local", xml)
    assert res["renamed_from"] == source_vm.name
    assert res["vm"]["name"] == f"{source_vm.name}-2"
    # The same UUID is taken by the original: the copy gets a new one.
    assert res["new_uuid"] and res["vm"]["uuid"] != source_vm.uuid
    assert list(res["vm"]["tags"]) == ["exported"]

    res = await manager.export.import_xml("local", xml)
    assert res["vm"]["name"] == f"{source_vm.name}-3"


async def test_new_identity_gives_new_macs_and_uuid(manager, source_vm):
    xml = _diskless(await manager.export.export_xml("local", source_vm.name))
    old_macs = {n.mac_address for n in Domain.from_xml(xml).devices.interfaces}
    name = f"kvmm-t-ops-{uuid.uuid4().hex[:8]}"
    res = await manager.export.import_xml("local", xml, ImportOptions(name=name, new_identity=True))
    assert res["vm"]["name"] == name and res["renamed_from"] is None
    new_xml = await manager.export.export_xml("local", name)
    new_macs = {n.mac_address for n in Domain.from_xml(new_xml).devices.interfaces}
    assert new_macs and not new_macs & old_macs
    if validator_available():
        validate_xml(new_xml, "domain")


async def test_remap_network_and_pool(manager, source_vm):
    xml = await manager.export.export_xml("local", source_vm.name)
    dom = Domain.from_xml(xml)
    disk = dom.devices.disks[0]
    # A volume of its own (the source's would be shared, which an import refuses).
    vol_name = f"{source_vm.name}-copy.img"
    conn = libvirt.open("test:///default")
    try:
        conn.storagePoolLookupByName(POOL).createXML(
            f"<volume><name>{vol_name}</name><capacity>1048576</capacity></volume>", 0
        )
    finally:
        conn.close()
    # Describe the disk as a pool volume of a pool that does not exist here, and the NIC
    # on a network that does not exist here either.
    disk.clear_source()
    disk.type = "volume"
    disk.source_pool, disk.source_volume = "kvmm-t-ops-elsewhere", vol_name
    dom.devices.interfaces[0].source_network = "kvmm-t-ops-lan"
    foreign = dom.to_xml()

    with pytest.raises(NotFound) as err:
        await manager.export.import_xml("local", foreign)
    assert err.value.field == "network_map" and "kvmm-t-ops-lan" in err.value.message
    with pytest.raises(NotFound) as err:
        await manager.export.import_xml(
            "local", foreign, ImportOptions(network_map={"kvmm-t-ops-lan": "default"})
        )
    assert err.value.field == "pool_map" and "kvmm-t-ops-elsewhere" in err.value.message

    res = await manager.export.import_xml(
        "local",
        foreign,
        ImportOptions(
            network_map={"kvmm-t-ops-lan": "default"},
            pool_map={"kvmm-t-ops-elsewhere": POOL},
            new_identity=True,
        ),
    )
    imported = Domain.from_xml(await manager.export.export_xml("local", res["vm"]["name"]))
    assert imported.devices.interfaces[0].source_network == "default"
    assert (imported.devices.disks[0].source_pool, imported.devices.disks[0].source_volume) == (
        POOL,
        vol_name,
    )


async def test_bad_imports_name_the_field(manager, source_vm):
    xml = await manager.export.export_xml("local", source_vm.name)
    with pytest.raises(Conflict) as err:
        await manager.export.import_xml("local", xml, ImportOptions(name=source_vm.name))
    assert err.value.field == "name"
    for bad in ("", "<network/>", "<domain><name>x"):
        with pytest.raises(InvalidInput) as err:
            await manager.export.import_xml("local", bad)
        assert err.value.field == "xml"
    with pytest.raises(InvalidInput) as err:
        await manager.export.import_xml("local", xml, ImportOptions(name="Bad Name!"))
    assert err.value.field == "name"
    with pytest.raises(InvalidInput) as err:
        await manager.export.import_xml("local", xml, ImportOptions(network_map={"a": ""}))
    assert err.value.field == "network_map"
