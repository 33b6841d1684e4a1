"""The VM service's libvirt bodies on the test driver (no Manager needed): create with
rollback, lifecycle and wrong states, delete with the volume protections, edits."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import libvirt
import pytest

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound
from kvmmanager.services.vms import builder as vm_builder
from kvmmanager.services.vms import edit as vm_edit
from kvmmanager.services.vms import service as vms
from kvmmanager.services.vms.builder import DiskSpec, HostCaps, InstallSource, NicSpec, VmSpec
from kvmmanager.services.vms.delete import KeptVolume
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.validate import validate_xml

POOL = "default-pool"
HOST = "local"


@pytest.fixture
def conn() -> Iterator[libvirt.virConnect]:
    """test:///default is shared by every connection of the process: everything made here
    carries the kvmm-t-vm- prefix and is removed afterwards."""
    c = libvirt.open("test:///default")
    yield c
    for dom in c.listAllDomains():
        if dom.name().startswith("kvmm-t-vm-"):
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()
    pool = c.storagePoolLookupByName(POOL)
    for vol in pool.listAllVolumes():
        if vol.name().startswith("kvmm-t-vm-"):
            vol.delete(0)
    c.close()


@pytest.fixture
def name() -> str:
    return f"kvmm-t-vm-{uuid.uuid4().hex[:8]}"


def _create(conn: libvirt.virConnect, **kw: object) -> libvirt.virDomain:
    spec = VmSpec(**kw)
    # As an admin's create: `kernel="/k"` below is no volume of a pool.
    res = vm_builder.create_blocking(conn, spec, "qemu", HostCaps(), host_paths=True)
    return conn.lookupByUUIDString(res["uuid"])


def _iso(conn: libvirt.virConnect, name: str) -> libvirt.virStorageVol:
    pool = conn.storagePoolLookupByName(POOL)
    xml = vm_builder.Volume(name=f"{name}.iso", capacity=1 << 20, target_format="raw").to_xml()
    return pool.createXML(xml, 0)


def test_create_defines_a_complete_vm(conn, name):
    dom = _create(
        conn, name=name, vcpus=2, memory_mib=256, tags=["t1"], description="hello",
        disks=[DiskSpec(pool=POOL, size_gib=1)], nics=[NicSpec(network="default")],
    )  # fmt: skip
    assert vms.state_of(dom) == "shutoff"
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    validate_xml(xml, "domain")
    d = Domain.from_xml(xml)
    assert d.type == "qemu" and d.vcpus == 2 and d.memory == 256 * 1024
    assert d.description == "hello"
    vol = conn.storagePoolLookupByName(POOL).storageVolLookupByName(f"{name}.qcow2")
    assert [x.source_file for x in d.devices.disks if x.device == "disk"] == [vol.path()]
    assert len(d.devices.cdroms()) == 1 and not d.devices.cdroms()[0].has_media
    assert {c.target_name for c in d.devices.channels} == {
        vm_builder.AGENT_CHANNEL,
        vm_builder.QGA_CHANNEL,
    }
    assert d.manager_metadata.tags == ["t1"]
    # The VNC password is only in the secure XML.
    assert d.devices.graphics[0].passwd is None
    secure = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))
    assert len(secure.devices.graphics[0].passwd) == 8


def test_create_and_start(conn, name):
    dom = _create(conn, name=name, start=True, install=InstallSource(kind="kernel", kernel="/k"))
    assert vms.state_of(dom) == "running"


def test_create_existing_name_conflicts(conn, name):
    _create(conn, name=name)
    with pytest.raises(Conflict) as exc:
        _create(conn, name=name)
    assert exc.value.field == "name"


def test_create_rolls_back_volumes_when_define_fails(conn, name, monkeypatch):
    def boom(*_a: object, **_k: object) -> None:
        raise libvirt.libvirtError("define failed")

    monkeypatch.setattr(conn, "defineXML", boom)
    with pytest.raises(libvirt.libvirtError):
        _create(conn, name=name, disks=[DiskSpec(pool=POOL, size_gib=1)] * 2)
    pool = conn.storagePoolLookupByName(POOL)
    assert not [v for v in pool.listVolumes() if v.startswith(name)]


def test_create_rolls_back_everything_when_start_fails(conn, name, monkeypatch):
    real_define = conn.defineXML

    class FailingStart:
        def __init__(self, dom: libvirt.virDomain) -> None:
            self._dom = dom

        def create(self) -> None:
            raise libvirt.libvirtError("start failed")

        def __getattr__(self, attr: str) -> object:
            return getattr(self._dom, attr)

    monkeypatch.setattr(conn, "defineXML", lambda xml: FailingStart(real_define(xml)))
    with pytest.raises(libvirt.libvirtError):
        _create(conn, name=name, start=True, disks=[DiskSpec(pool=POOL, size_gib=1)])
    assert name not in [d.name() for d in conn.listAllDomains()]
    assert not [v for v in conn.storagePoolLookupByName(POOL).listVolumes() if v.startswith(name)]


def test_create_refuses_a_volume_of_another_vm(conn, name):
    _create(conn, name=name, disks=[DiskSpec(pool=POOL, size_gib=1)])
    with pytest.raises(Conflict) as exc:
        _create(conn, name=name + "-b", disks=[DiskSpec(pool=POOL, volume=f"{name}.qcow2")])
    assert exc.value.field == "disks[0].volume"


def test_create_validates_against_the_host(conn, name):
    with pytest.raises(InvalidInput) as exc:
        _create(conn, name=name, memory_mib=10**9)
    assert exc.value.field == "memory_mib"
    with pytest.raises(InvalidInput) as exc:
        _create(conn, name=name, nics=[NicSpec(network="kvmm-t-vm-none")])
    assert exc.value.field == "nics[0].network"


def test_lifecycle_and_wrong_states(conn, name):
    dom = _create(conn, name=name)
    for fn in (vms._destroy, vms._reboot, vms._suspend, vms._resume):
        with pytest.raises(Conflict, match=r"is not running|is not paused"):
            fn(dom, HOST)
    with pytest.raises(Conflict, match="is not running"):
        vms._shutdown_blocking(dom, HOST, "auto", False)
    assert vms._start(dom, HOST).state == "running"
    with pytest.raises(Conflict, match="already running"):
        vms._start(dom, HOST)
    assert vms._suspend(dom, HOST).state == "paused"
    with pytest.raises(Conflict, match="already paused"):
        vms._suspend(dom, HOST)
    with pytest.raises(Conflict, match="resume it"):
        vms._start(dom, HOST)
    assert vms._resume(dom, HOST).state == "running"
    assert vms._reboot(dom, HOST).state == "running"
    assert vms._reset(dom, HOST).state == "running"
    with pytest.raises(Conflict, match="no guest agent is connected"):
        vms._shutdown_blocking(dom, HOST, "agent", False)
    # With the project's agent connected, the caller is told to go through it.
    assert vms._shutdown_blocking(dom, HOST, "auto", True).details["mode"] == "kvmm-agent"
    assert vms._shutdown_blocking(dom, HOST, "acpi", True).details["mode"] == "acpi"
    vms._start(dom, HOST)
    res = vms._shutdown_blocking(dom, HOST, "auto", False)
    assert res.details["mode"] == "acpi"
    assert res.state == "shutoff"  # the test driver powers off at once
    vms._start(dom, HOST)
    with pytest.raises(Conflict, match="power it off"):
        vms._delete_blocking(dom, HOST, False)
    assert vms._destroy(dom, HOST).state == "shutoff"


def test_lookup_by_name_and_uuid(conn, name):
    dom = _create(conn, name=name)
    assert vm_builder.lookup(conn, HOST, dom.UUIDString()).name() == name
    assert vm_builder.lookup(conn, HOST, name).UUIDString() == dom.UUIDString()
    with pytest.raises(NotFound) as exc:
        vm_builder.lookup(conn, HOST, "kvmm-t-vm-missing")
    assert exc.value.field == "vm"


def test_delete_keeps_volumes_unless_asked(conn, name):
    dom = _create(conn, name=name, disks=[DiskSpec(pool=POOL, size_gib=1)])
    res = vms._delete_blocking(dom, HOST, False)
    assert res.deleted_volumes == []
    assert name not in [d.name() for d in conn.listAllDomains()]
    assert f"{name}.qcow2" in conn.storagePoolLookupByName(POOL).listVolumes()


def test_delete_with_volumes_spares_shared_volumes_and_isos(conn, name):
    iso = _iso(conn, name)
    dom = _create(
        conn, name=name, install=InstallSource(kind="iso", pool=POOL, volume=f"{name}.iso"),
        disks=[DiskSpec(pool=POOL, size_gib=1), DiskSpec(pool=POOL, size_gib=1)],
    )  # fmt: skip
    pool = conn.storagePoolLookupByName(POOL)
    own, shared = (pool.storageVolLookupByName(f"{name}{s}.qcow2").path() for s in ("", "-1"))
    # A second VM defined behind the manager's back (as with virsh) uses the second disk.
    other = Domain(type="qemu", name=f"{name}-other", memory=65536, vcpus=1)
    other.os.os_type = "hvm"
    other.devices.add(vm_builder.Disk(type="file", device="disk", source_file=shared,
                                      target_dev="vda", target_bus="virtio"))  # fmt: skip
    conn.defineXML(other.to_xml())

    res = vms._delete_blocking(dom, HOST, True)
    assert res.deleted_volumes == [own]
    assert res.kept_volumes == [KeptVolume(shared, f"used by vm '{name}-other'")]
    left = pool.listVolumes()
    assert f"{name}.qcow2" not in left
    assert f"{name}-1.qcow2" in left
    assert iso.name() in left


def test_vcpus_and_memory_next_boot_when_shut_off(conn, name):
    dom = _create(conn, name=name, vcpus=1, memory_mib=128)
    res = vm_edit._set_vcpus(dom, 3)
    assert (res.applied_live, res.next_boot) == (False, True)
    res = vm_edit._set_memory(dom, 256)
    assert (res.applied_live, res.next_boot) == (False, True)
    d = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert d.vcpus == 3 and d.online_vcpus == 3
    assert d.memory == 256 * 1024 and d.current_memory == 256 * 1024
    res = vm_edit._set_vcpus(dom, 1)
    assert Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).vcpus == 1


def test_vcpus_and_memory_live_when_running_within_maximum(conn, name):
    dom = _create(conn, name=name, vcpus=2, memory_mib=256, start=True)
    res = vm_edit._set_memory(dom, 128)
    assert (res.applied_live, res.next_boot) == (True, False)
    assert dom.info()[2] == 128 * 1024
    res = vm_edit._set_vcpus(dom, 1)
    assert (res.applied_live, res.next_boot) == (True, False)
    # Above the running maximum: only the next boot can have it, and it says so.
    res = vm_edit._set_memory(dom, 512)
    assert (res.applied_live, res.next_boot) == (False, True)
    assert "limited to 256 MiB" in res.message
    res = vm_edit._set_vcpus(dom, 4)
    assert (res.applied_live, res.next_boot) == (False, True)
    assert Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).vcpus == 4


def test_media_and_devices_on_a_shut_off_vm_keep_the_rest(conn, name):
    iso = _iso(conn, name)
    dom = _create(conn, name=name, disks=[DiskSpec(pool=POOL, size_gib=1)])
    before = Domain.from_xml(dom.XMLDesc(vm_edit.INACTIVE_SECURE))
    res = vm_edit._media_blocking(dom, None, iso.path())
    assert (res["applied_live"], res["next_boot"]) == (False, True)
    after = Domain.from_xml(dom.XMLDesc(vm_edit.INACTIVE_SECURE))
    assert after.devices.cdroms()[0].source_file == iso.path()
    # Redefining kept the VNC password and everything else.
    assert after.devices.graphics[0].passwd == before.devices.graphics[0].passwd
    assert len(after.devices.channels) == 2
    vm_edit._media_blocking(dom, None, None)
    assert not Domain.from_xml(dom.XMLDesc(0)).devices.cdroms()[0].has_media
    with pytest.raises(NotFound):
        vm_edit._media_blocking(dom, "sdz", None)

    res = vm_edit._attach_disk_blocking(conn, HOST, name, DiskSpec(pool=POOL, size_gib=1))
    assert res["details"]["target"] == "vdb" and res["details"]["created"]
    d = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert [x.target_dev for x in d.devices.disks if x.device == "disk"] == ["vda", "vdb"]
    validate_xml(d.to_xml(), "domain")


def test_shared_helpers(conn, name):
    dom = _create(conn, name=name, disks=[DiskSpec(pool=POOL, size_gib=1)])
    used = vm_builder.paths_used_by_others(conn, None)
    path = conn.storagePoolLookupByName(POOL).storageVolLookupByName(f"{name}.qcow2").path()
    assert used[path] == name
    assert path not in vm_builder.paths_used_by_others(conn, dom.UUIDString())


def test_a_maximum_set_at_create_lets_a_running_vm_grow_live(conn, name):
    """Issue 17 item 7: a VM created with a hot-add maximum boots with fewer vCPUs and
    less memory than that maximum, and a running VM grows to it live, keeping it."""
    dom = _create(
        conn, name=name, vcpus=1, max_vcpus=4, memory_mib=128, max_memory_mib=512, start=True
    )
    d = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert (d.vcpus, d.online_vcpus) == (4, 1)
    assert (d.memory, d.current_memory) == (512 * 1024, 128 * 1024)
    res = vm_edit._set_vcpus(dom, 3)
    assert (res.applied_live, res.next_boot) == (True, False), res.message
    assert dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 3
    res = vm_edit._set_memory(dom, 384)
    assert (res.applied_live, res.next_boot) == (True, False), res.message
    assert dom.info()[2] == 384 * 1024
    # The maximum stays for the next hot-add, in the definition too.
    d = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert (d.vcpus, d.online_vcpus, d.memory, d.current_memory) == (
        4, 3, 512 * 1024, 384 * 1024
    )  # fmt: skip


def test_the_maximum_is_edited_for_the_next_boot_and_validated(conn, name):
    dom = _create(conn, name=name, vcpus=2, memory_mib=256, start=True)
    res = vm_edit._set_vcpus(dom, None, 6)
    assert (res.applied_live, res.next_boot) == (False, True)
    assert "maximum set to 6 vCPUs from the next boot" in res.message
    res = vm_edit._set_memory(dom, None, 1024)
    assert "maximum set to 1024 MiB from the next boot" in res.message
    d = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert (d.vcpus, d.online_vcpus, d.memory, d.current_memory) == (
        6, 2, 1024 * 1024, 256 * 1024
    )  # fmt: skip
    with pytest.raises(InvalidInput) as exc:
        vm_edit._set_vcpus(dom, None, 1)
    assert exc.value.field == "max_vcpus" and "max_vcpus=1 is less than vcpus=2" in str(exc.value)
    with pytest.raises(InvalidInput) as exc:
        vm_edit._set_memory(dom, 2048, 1024)
    assert exc.value.field == "max_memory_mib"
    # Without a maximum given, more than the maximum raises it (for the next boot).
    res = vm_edit._set_memory(dom, 2048)
    assert (res.applied_live, res.next_boot) == (False, True)
    assert Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).memory == 2048 * 1024
    with pytest.raises(InvalidInput) as exc:
        _create(conn, name=f"{name}-b", vcpus=2, max_vcpus=1)
    assert exc.value.field == "max_vcpus"
    with pytest.raises(InvalidInput) as exc:
        _create(conn, name=f"{name}-b", memory_mib=256, max_memory_mib=128)
    assert exc.value.field == "max_memory_mib"
