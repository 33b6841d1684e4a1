"""Clones against the real libvirtd (qemu:///system): the data written into the source's
disk (qemu-io patterns) is in the full copy, which stands alone (no backing file) and
passes qemu-img check; a running source is copied under a temporary external snapshot
that is merged away afterwards; a linked clone of a template reads the template's data
through its overlay; a UEFI VM's NVRAM (not in any pool) is reset, not shared."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from kvmmanager.virt.xml.devices import Disk
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.pool import Pool
from kvmmanager.virt.xml.volume import Volume

pytestmark = pytest.mark.libvirtd
URI = "qemu:///system"
PREFIX = "kvmm-t-clone-"
MIB = 1024 * 1024


def qemu_io(path: str, cmd: str) -> None:
    r = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", cmd, path], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and "verification failed" not in r.stdout, r.stdout + r.stderr


def image_info(path: str) -> dict[str, Any]:
    r = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", path],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(r.stdout)


def qemu_img_check(path: str) -> None:
    r = subprocess.run(["qemu-img", "check", path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture
def settings(settings):
    settings.libvirt.default_uri = URI
    return settings


@pytest.fixture
def lab() -> Iterator[dict[str, Any]]:
    conn = libvirt.open(URI)
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir="/var/tmp"))
    path.chmod(0o755)
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    pool = conn.storagePoolCreateXML(Pool(type="dir", name=name, target_path=str(path)).to_xml(), 0)
    try:
        yield {"conn": conn, "pool": pool, "name": name, "dir": path}
    finally:
        for dom in conn.listAllDomains():
            if dom.name().startswith(name):
                if dom.isActive():
                    dom.destroy()
                flags = libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                if Domain.from_xml(dom.XMLDesc(0)).os.is_uefi:
                    flags |= libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                dom.undefineFlags(flags)
        pool.refresh(0)
        for v in pool.listAllVolumes():
            v.delete(0)
        pool.destroy()
        shutil.rmtree(path, ignore_errors=True)
        conn.close()


def make_vm(lab: dict[str, Any], uefi: bool = False) -> tuple[str, str]:
    """A qcow2-disk domain whose disk holds 0x5a at 0..64k; (name, disk path)."""
    name = lab["name"]
    vol = lab["pool"].createXML(
        Volume(name=f"{name}-disk0.qcow2", capacity=16 * MIB, target_format="qcow2").to_xml(), 0
    )
    qemu_io(vol.path(), "write -P 0x5a 0 64k")
    dom = Domain(type="qemu", name=name, memory=64 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch = "hvm", "x86_64"
    dom.os.machine = "q35" if uefi else "pc"
    if uefi:
        dom.os.firmware = "efi"
        dom.os.secure_boot = False
        dom.features.acpi = True
    disk = Disk(type="file", device="disk", driver_name="qemu", driver_type="qcow2")
    disk.source_file, disk.target_dev, disk.target_bus = vol.path(), "vda", "virtio"
    dom.devices.add(disk)
    lab["conn"].defineXML(dom.to_xml())
    return name, vol.path()


async def test_full_clone_of_stopped_and_running_vm(manager: Any, lab: dict[str, Any]) -> None:
    await manager.registry.get("local").wait_connected(60)
    name, src = make_vm(lab)
    job = await manager.jobs.wait(await manager.clones.start("local", name, f"{name}-a"))
    assert job.state == "done", job.error
    copy = job.result["volumes"][0]
    assert copy != src and Path(copy).name == f"{name}-a-disk0.qcow2"
    assert "backing-filename" not in image_info(copy)
    qemu_img_check(copy)
    qemu_io(copy, "read -P 0x5a 0 64k")

    # Running: refused by default, copied under a temporary snapshot when asked.
    dom = lab["conn"].lookupByName(name)
    dom.create()
    r = await manager.clones.clone("local", name, f"{name}-b", consistent="snapshot")
    assert r["consistency"]["level"] == "crash-consistent"  # SeaBIOS only: no agent
    assert dom.listAllSnapshots() == []
    live = Domain.from_xml(dom.XMLDesc(0)).devices.disk_by_target("vda")
    assert live.source_file == src  # the temporary overlay was merged back
    dom.destroy()
    copy_b = r["volumes"][0]
    qemu_img_check(copy_b)
    qemu_io(copy_b, "read -P 0x5a 0 64k")
    assert sorted(p.name for p in lab["dir"].iterdir()) == sorted(
        Path(p).name for p in (src, copy, copy_b)
    )


async def test_linked_clone_of_a_template(manager: Any, lab: dict[str, Any]) -> None:
    await manager.registry.get("local").wait_connected(60)
    name, src = make_vm(lab)
    await manager.templates.mark("local", name)
    job = await manager.jobs.wait(await manager.templates.deploy("local", name, f"{name}-l"))
    assert job.state == "done", job.error
    overlay = job.result["volumes"][0]
    info = image_info(overlay)
    assert info["backing-filename"] == src and info["format"] == "qcow2"
    qemu_io(overlay, "read -P 0x5a 0 64k")
    qemu_io(overlay, "write -P 0x77 0 4k")  # the clone's writes stay in its overlay
    qemu_io(src, "read -P 0x5a 0 64k")


def file_exists(path: str) -> bool:
    return os.path.exists(path)


def nvram_of(dom: libvirt.virDomain, flags: int = 0) -> str | None:
    return Domain.from_xml(dom.XMLDesc(flags)).os.nvram


@pytest.mark.parametrize("explicit", [False, True], ids=["auto-firmware", "explicit-loader"])
async def test_uefi_clone_gets_its_own_fresh_nvram(
    manager: Any, lab: dict[str, Any], explicit: bool
) -> None:
    await manager.registry.get("local").wait_connected(60)
    name, _ = make_vm(lab, uefi=True)
    conn = lab["conn"]
    if explicit:  # loader + NVRAM paths in the definition (virt-manager's older style)
        xml = Domain.from_xml(conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        xml.os.firmware = None
        xml.os.secure_boot = None
        xml.os.loader, xml.os.loader_readonly = "/usr/share/OVMF/OVMF_CODE_4M.fd", True
        xml.os.loader_type = "pflash"
        xml.os.nvram_template = "/usr/share/OVMF/OVMF_VARS_4M.fd"
        conn.defineXML(xml.to_xml())
    src = conn.lookupByName(name)
    src.create()
    src_nvram = nvram_of(src)
    src.destroy()
    assert src_nvram and file_exists(src_nvram)

    r = await manager.clones.clone("local", name, f"{name}-u")
    assert r["nvram"] == "reset"
    clone = conn.lookupByName(f"{name}-u")
    clone.create()
    try:
        mine = nvram_of(clone)
        assert mine and mine != src_nvram and f"{name}-u" in mine
    finally:
        clone.destroy()
    assert file_exists(src_nvram)
