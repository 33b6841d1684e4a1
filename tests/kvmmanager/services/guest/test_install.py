"""install-agent / eject on VMs of the real libvirtd: channel, CD-ROM, ISO, guest commands."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from kvmmanager.core.config import Settings
from kvmmanager.core.errors import Conflict
from kvmmanager.iso import CHANNEL_NAME, ISO_NAME, agent_version
from kvmmanager.iso.builder import build_iso
from kvmmanager.services.guest.iso_deploy import volume_name
from kvmmanager.services.vms.builder import BuildInputs, DiskPlan, build_domain
from kvmmanager.services.vms.spec import InstallSource, VmSpec
from kvmmanager.virt.events import Event
from kvmmanager.virt.xml.devices import Disk
from kvmmanager.virt.xml.domain import Domain

pytestmark = pytest.mark.libvirtd

URI = "qemu:///system"
EPOCH = 1700000000


@pytest.fixture
def pool(dir_pool: Any) -> str:
    return dir_pool("kvmm-t-iso-").name


def _domain_xml(name: str, *, cdrom: bool) -> str:
    dom = Domain(type="qemu", name=name, memory=32 * 1024, current_memory=32 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch, dom.os.machine = "hvm", "x86_64", "pc"
    if cdrom:
        drive = Disk(type="file", device="cdrom", driver_name="qemu", driver_type="raw")
        drive.target_dev, drive.target_bus, drive.readonly = "hdc", "ide", True
        dom.devices.add(drive)
    return dom.to_xml()


@pytest.fixture
def make_vm(libvirtd_conn: libvirt.virConnect, libvirtd_cleanup: Any) -> Iterator[Any]:
    made: list[libvirt.virDomain] = []

    def make(*, cdrom: bool = False, start: bool = False) -> libvirt.virDomain:
        name = f"kvmm-t-iso-vm-{uuid.uuid4().hex[:6]}"
        dom = libvirtd_conn.defineXML(_domain_xml(name, cdrom=cdrom))
        made.append(dom)
        if start:
            dom.create()
        return dom

    yield make
    for dom in made:
        libvirtd_cleanup.drop_vm(dom.name())


@pytest.fixture
async def mgr(
    settings: Settings, pool: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Any]:
    from kvmmanager.services.manager import Manager

    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    settings.libvirt.default_uri = URI
    settings.agent.iso_pool = pool
    built = build_iso(tmp_path / ISO_NAME, source_date_epoch=EPOCH, cache_dir=tmp_path / "c")
    settings.agent.iso_path = str(built.path)
    m = Manager(settings)
    await m.start()
    await m.registry.get("local").wait_connected(60)
    try:
        yield m
    finally:
        await m.stop()


def _config(dom: libvirt.virDomain) -> Domain:
    return Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))


def _live(dom: libvirt.virDomain) -> Domain:
    return Domain.from_xml(dom.XMLDesc(0))


async def test_shut_off_vm_gets_channel_and_a_cdrom_with_the_iso(mgr: Any, make_vm: Any) -> None:
    dom = make_vm()
    res = await mgr.iso.install_agent("local", dom.name())
    assert res.channel == "added" and not res.running and res.cdrom_added
    assert res.volume == volume_name(agent_version())
    config = _config(dom)
    assert config.devices.channel(CHANNEL_NAME) is not None
    (cdrom,) = config.devices.cdroms()
    assert cdrom.source_file == res.iso_path
    assert cdrom.target_dev == res.cdrom == "hda"
    assert res.guest_commands == [
        "mkdir -p /mnt/kvmm",
        "mount -r /dev/sr0 /mnt/kvmm",
        "sh /mnt/kvmm/install.sh",
        "umount /mnt/kvmm",
    ]
    assert any("start the VM" in m for m in res.messages)

    # Idempotent: nothing is added twice, the ISO stays in the same drive.
    again = await mgr.iso.install_agent("local", dom.UUIDString())
    assert again.channel == "present" and not again.cdrom_added
    assert again.deploy["action"] == "unchanged"
    config = _config(dom)
    assert len(config.devices.channels_named(CHANNEL_NAME)) == 1
    assert len(config.devices.cdroms()) == 1


async def test_existing_empty_drive_gets_the_iso_then_eject(mgr: Any, make_vm: Any) -> None:
    dom = make_vm(cdrom=True)
    res = await mgr.iso.install_agent("local", dom.name())
    assert not res.cdrom_added and res.cdrom == "hdc"
    assert _config(dom).devices.disk_by_target("hdc").source_file == res.iso_path

    out = await mgr.iso.eject_agent("local", dom.name())
    assert out["details"]["target"] == "hdc"
    assert not _config(dom).devices.disk_by_target("hdc").has_media
    with pytest.raises(Conflict):
        await mgr.iso.eject_agent("local", dom.name())


async def test_agent_cd_beside_a_built_install_cd_never_boots_first(
    mgr: Any, libvirtd_conn: libvirt.virConnect, libvirtd_cleanup: Any
) -> None:
    """Issue 15: the create flow's default (install ISO + "Install the guest agent") put
    the agent ISO on hda before the installer on hdc, and <boot dev='cdrom'/> made
    SeaBIOS boot hda: "Could not read from CDROM ... No bootable device"."""
    name = f"kvmm-t-iso-boot-{uuid.uuid4().hex[:6]}"
    spec = VmSpec(name=name, install=InstallSource(kind="iso", pool="p", volume="inst.iso"))
    disks = [DiskPlan("/nonexistent/kvmm-t-disk.qcow2", "qcow2", "virtio")]
    built = build_domain(spec, BuildInputs("qemu", "x86_64", disks, "/nonexistent/inst.iso"))
    dom = libvirtd_conn.defineXML(built.to_xml())
    try:
        res = await mgr.iso.install_agent("local", name)
        config = _config(dom)
        assert config.os.boot_devices == []
        install = config.devices.disk_by_target("hdc")
        assert (install.source_file, install.boot_order) == ("/nonexistent/inst.iso", 1)
        assert config.devices.disk_by_target("vda").boot_order == 2
        agent = config.devices.disk_by_target(res.cdrom)
        assert agent.source_file == res.iso_path and agent.boot_order is None
        # After the install CD on the bus, so the guest sees it as the second drive.
        assert res.cdrom == "hdd"
        assert "mount -r /dev/sr1 /mnt/kvmm" in res.guest_commands
    finally:
        libvirtd_cleanup.drop_vm(name)


@pytest.mark.vm
async def test_running_vm_hotplugs_what_qemu_allows(mgr: Any, make_vm: Any) -> None:
    dom = make_vm(start=True)
    res = await mgr.iso.install_agent("local", dom.name())
    assert res.running
    live, config = _live(dom), _config(dom)
    assert config.devices.channel(CHANNEL_NAME) is not None
    assert (live.devices.channel(CHANNEL_NAME) is not None) == res.channel_live
    # An IDE CD-ROM cannot be hot-plugged: it is in the definition, and a restart is asked.
    assert res.cdrom_added and res.restart_needed
    assert not live.devices.cdroms()
    assert config.devices.cdroms()[0].source_file == res.iso_path
    assert any("power the VM off and start it again" in m for m in res.messages)


@pytest.mark.vm
async def test_running_vm_with_a_drive_gets_the_disc_now(mgr: Any, make_vm: Any) -> None:
    dom = make_vm(cdrom=True, start=True)
    res = await mgr.iso.install_agent("local", dom.name())
    assert not res.cdrom_added
    assert _live(dom).devices.disk_by_target("hdc").source_file == res.iso_path
    assert _config(dom).devices.disk_by_target("hdc").source_file == res.iso_path


async def test_eject_after_install_when_the_agent_connects(
    mgr: Any, make_vm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    mgr.settings.agent.eject_after_install = True
    dom = make_vm(cdrom=True)
    await mgr.iso.install_agent("local", dom.name())
    assert _config(dom).devices.disk_by_target("hdc").has_media
    # What the inventory publishes when the guest opens its agent port.
    mgr.bus.publish(
        Event(
            "domain.agent",
            host="local",
            subject=dom.UUIDString(),
            data={"name": dom.name(), "channel": "kvmm", "status": "connected"},
        )
    )
    deadline = asyncio.get_running_loop().time() + 60
    while _config(dom).devices.disk_by_target("hdc").has_media:
        assert asyncio.get_running_loop().time() < deadline, "the ISO was not ejected"
        await asyncio.sleep(0.05)


async def test_pending_eject_watchers_stop_on_aclose(mgr: Any, make_vm: Any) -> None:
    mgr.settings.agent.eject_after_install = True
    dom = make_vm(cdrom=True)
    await mgr.iso.install_agent("local", dom.name())
    watchers = set(mgr.iso.installer._watchers)
    assert len(watchers) == 1
    await mgr.iso.aclose()
    assert all(t.cancelled() for t in watchers)
    assert _config(dom).devices.disk_by_target("hdc").has_media  # nothing was ejected
