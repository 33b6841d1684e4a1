"""Migrations for real, between the main libvirtd and a second libvirtd in its own
namespaces (second_host.py), both driven by one Manager: a live migration of a running
TCG VM with copy-storage of a qcow2 disk whose bytes are checked on the other side,
progress and cancel of a throttled one, an offline migration, the inventory following,
and the pre-flight refusals against a real target."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any

import libvirt
import pytest
from tests.libvirtd_pools import dir_pool_xml

from kvmmanager.core.errors import Conflict, InvalidInput, KvmmError
from kvmmanager.services.storage.xml import build_volume_xml
from kvmmanager.virt.xml.devices import Disk, Graphics, Interface
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.network import Network
from kvmmanager.virt.xml.validate import validate_xml

from .conftest import (
    LOCAL_URI,
    MIB,
    WAIT,
    PoolPair,
    define_and_start,
    download,
    drop_vm_everywhere,
    guest_bytes,
    images_identical,
    in_inventory,
    qcow2_with,
    unique,
    until,
    upload,
)
from .second_host import SecondHost

pytestmark = [pytest.mark.libvirtd, pytest.mark.vm, pytest.mark.slow]


def domain_xml(name: str, disk: str | None = None, network: str | None = None) -> str:
    """A tiny TCG VM: SeaBIOS finds nothing to boot and idles, which is all a migration
    needs; 64 MiB of RAM keeps the memory pass short."""
    dom = Domain(type="qemu", name=name, memory=64 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch, dom.os.machine = "hvm", "x86_64", "pc"
    if disk:
        vda = dom.devices.add(Disk(type="file", device="disk", source_file=disk))
        vda.driver_name, vda.driver_type = "qemu", "qcow2"
        vda.target_dev, vda.target_bus = "vda", "virtio"
    if network:
        dom.devices.add(Interface(type="network", source_network=network, model="virtio"))
    dom.devices.add(Graphics(type="vnc", autoport=True, listen_address="127.0.0.1"))
    xml = dom.to_xml()
    validate_xml(xml, "domain")
    return xml


def isolated_network_xml(name: str, bridge: str) -> str:
    """An isolated network (no forward, no IP: no dnsmasq) on its own bridge."""
    return Network(name=name, bridge_name=bridge).to_xml()


def make_disk(pool: PoolPair, tmp_path: Path, data: bytes, size_mib: int = 32) -> tuple[str, Path]:
    """A qcow2 volume in the source pool holding `data`; returns (path, the image file)."""
    image = qcow2_with(data, tmp_path / "src.qcow2", size_mib)
    conn = libvirt.open(LOCAL_URI)
    try:
        vol = conn.storagePoolLookupByName(pool.name).createXML(
            build_volume_xml("disk.qcow2", size_mib * MIB, "qcow2"), 0
        )
        upload(conn, vol, image)
        return vol.path(), image
    finally:
        conn.close()


async def test_live_migration_copies_the_disk(
    two_hosts: Any, pool_pair: PoolPair, vm_name: str, tmp_path: Path, second_host: SecondHost
) -> None:
    m = two_hosts
    data = os.urandom(3 * MIB) + b"kvmm migration marker" * 1000
    path, image = make_disk(pool_pair, tmp_path, data)
    uuid = await define_and_start(m, domain_xml(vm_name, disk=path))
    await until(m, lambda: in_inventory(m, "local", uuid))

    plan = await m.migration.check("local", vm_name, "h2", copy_storage=True)
    assert plan["copy_disks"] == [path]
    with m.bus.subscribe(predicate=lambda e: e.kind == "job.progress") as sub:
        job_id = await m.migration.start(
            "local", vm_name, "h2", copy_storage=True, auto_converge=True, compressed=True
        )
        async with asyncio.timeout(WAIT):
            job = await m.jobs.wait(job_id)
        seen = []
        while not sub._queue.empty():
            seen.append(sub._queue.get_nowait())
    assert job.state == "done", job.error
    result = job.result
    assert result["to"] == "h2" and result["copy_disks"] == [path]
    assert result["migrate_uri"] == f"tcp://{second_host.addr}"
    # The target measured the incoming migration: the real numbers, not ours.
    assert result["stats"]["data_total"] > 0 and "downtime" in result["stats"]
    assert any(e.subject == job_id for e in seen)

    # libvirt: running on h2, gone from local; the disk's bytes arrived.
    remote = second_host.open()
    try:
        dom = remote.lookupByUUIDString(uuid)
        assert dom.isActive() and dom.isPersistent()
        got = tmp_path / "got.qcow2"
        download(remote, remote.storageVolLookupByPath(path), got)
    finally:
        remote.close()
    assert await asyncio.to_thread(images_identical, image, got) == "Images are identical."
    seen_by_guest = await asyncio.to_thread(guest_bytes, got, len(data))
    assert hashlib.sha256(seen_by_guest).digest() == hashlib.sha256(data).digest()
    assert (pool_pair.target_dir / "disk.qcow2").exists()  # the second host's own file

    # The manager's inventory follows through events: on h2, gone from local.
    await until(m, lambda: not in_inventory(m, "local", uuid))
    assert m.inventory.domain("h2", uuid).name == vm_name
    with pytest.raises(KvmmError):
        await m.registry.get("local").run(
            lambda: m.registry.get("local").conn.lookupByName(vm_name)
        )
    # Both hosts stay usable.
    assert (await m.hosts.info("local"))["name"] == "local"
    assert (await m.hosts.info("h2"))["hostname"] == second_host.hostname


async def test_throttled_migration_reports_progress_and_cancels(
    two_hosts: Any, pool_pair: PoolPair, vm_name: str, tmp_path: Path, second_host: SecondHost
) -> None:
    """1 MiB/s for a disk of 24 MiB of random data: caught in flight, then cancelled; the
    VM keeps running on local and the target keeps nothing of it."""
    m = two_hosts
    path, _ = make_disk(pool_pair, tmp_path, os.urandom(24 * MIB))
    uuid = await define_and_start(m, domain_xml(vm_name, disk=path))
    await until(m, lambda: in_inventory(m, "local", uuid))

    with m.bus.subscribe(predicate=lambda e: e.kind == "job.progress") as sub:
        job_id = await m.migration.start("local", vm_name, "h2", copy_storage=True, bandwidth_mib=1)
        async with asyncio.timeout(WAIT):
            while True:
                event = await sub.get()
                if event.subject == job_id and event.data["total"] > 0:
                    break
    assert event.data["message"] == "copying disks"
    assert event.data["total"] >= 24 * MIB
    m.jobs.cancel(job_id)
    async with asyncio.timeout(WAIT):
        job = await m.jobs.wait(job_id)
    assert job.state == "cancelled", (job.state, job.error)

    local = libvirt.open(LOCAL_URI)
    remote = second_host.open()
    try:
        assert local.lookupByUUIDString(uuid).isActive()
        with pytest.raises(libvirt.libvirtError):
            remote.lookupByUUIDString(uuid)
        remote.storagePoolLookupByName(pool_pair.name).refresh(0)
        with pytest.raises(libvirt.libvirtError):
            remote.storageVolLookupByPath(path)  # the pre-created copy was removed
    finally:
        local.close()
        remote.close()
    assert not (pool_pair.target_dir / "disk.qcow2").exists()
    assert in_inventory(m, "local", uuid) and not in_inventory(m, "h2", uuid)

    # The same VM can still migrate afterwards (nothing half-made blocks it).
    plan = await m.migration.check("local", vm_name, "h2", copy_storage=True)
    assert plan["copy_disks"] == [path]


async def test_offline_migration_defines_the_vm_on_the_target(
    two_hosts: Any, vm_name: str, second_host: SecondHost
) -> None:
    m = two_hosts
    uuid = await define_and_start(m, domain_xml(vm_name), start=False)
    await until(m, lambda: in_inventory(m, "local", uuid))
    with pytest.raises(Conflict, match="not running"):
        await m.migration.check("local", vm_name, "h2")
    job_id = await m.migration.start("local", vm_name, "h2", live=False)
    async with asyncio.timeout(WAIT):
        job = await m.jobs.wait(job_id)
    assert job.state == "done", job.error
    assert job.result["live"] is False and job.result["migrate_uri"] is None
    await until(m, lambda: not in_inventory(m, "local", uuid))
    assert m.inventory.domain("h2", uuid).state == "shutoff"
    remote = second_host.open()
    try:
        dom = remote.lookupByUUIDString(uuid)
        assert dom.isPersistent() and not dom.isActive()
    finally:
        remote.close()


async def test_preflight_refusals_against_a_real_target(
    two_hosts: Any, pool_pair: PoolPair, vm_name: str, tmp_path: Path, second_host: SecondHost
) -> None:
    m = two_hosts
    mig = m.migration
    net = unique("net")
    bridge = f"kvmt{net[-6:]}"
    local = libvirt.open(LOCAL_URI)
    try:
        # An isolated network (no IP: no dnsmasq) that only the main host has.
        local.networkCreateXML(isolated_network_xml(net, bridge))
        path, _ = make_disk(pool_pair, tmp_path, b"x" * 4096)
        uuid = await define_and_start(m, domain_xml(vm_name, disk=path, network=net))
        await until(m, lambda: in_inventory(m, "local", uuid))

        await m.registry.add("again", LOCAL_URI)
        await m.registry.get("again").wait_connected(60)
        with pytest.raises(InvalidInput, match="same machine") as e:
            await mig.check("local", vm_name, "again", copy_storage=True)
        assert e.value.field == "target"
        with pytest.raises(Conflict, match=f"network '{net}' does not exist on host 'h2'"):
            await mig.check("local", vm_name, "h2", copy_storage=True)

        remote = second_host.open()
        try:
            remote.networkCreateXML(isolated_network_xml(net, bridge))
            with pytest.raises(Conflict, match="local to 'local'") as e:
                await mig.check("local", vm_name, "h2")
            assert e.value.field == "copy_storage"
            # A file at the same path on the target is another disk: never overwritten.
            pool = remote.storagePoolLookupByName(pool_pair.name)
            pool.createXML(build_volume_xml("disk.qcow2", 1048576, "raw"), 0)
            with pytest.raises(Conflict, match="already has a volume"):
                await mig.check("local", vm_name, "h2", copy_storage=True)
            pool.storageVolLookupByName("disk.qcow2").delete(0)
            # No pool for the disk's directory on the target.
            pool.destroy()
            with pytest.raises(Conflict, match="no active pool") as e:
                await mig.check("local", vm_name, "h2", copy_storage=True)
            assert e.value.field == "target"
            remote.storagePoolCreateXML(dir_pool_xml(pool_pair.name, pool_pair.path), 0)
        finally:
            remote.close()
        plan = await mig.check("local", vm_name, "h2", copy_storage=True, bandwidth_mib=50)
        assert plan["copy_disks"] == [path]
        with pytest.raises(InvalidInput) as e:
            await mig.check("local", vm_name, "h2", copy_storage=True, migrate_uri="ftp://x")
        assert e.value.field == "migrate_uri"
        with pytest.raises(InvalidInput) as e:
            await mig.check("local", vm_name, "h2", copy_storage=True, bandwidth_mib=0)
        assert e.value.field == "bandwidth_mib"
    finally:
        drop_vm_everywhere(second_host, vm_name)
        for opener in (lambda: local, second_host.open):
            conn = opener()
            with contextlib.suppress(libvirt.libvirtError):
                conn.networkLookupByName(net).destroy()
        local.close()


async def test_options_reach_qemu(two_hosts: Any, vm_name: str, second_host: SecondHost) -> None:
    """auto-converge + compressed (and a bandwidth cap) migrate a diskless VM; post-copy
    reaches QEMU too, which refuses it here (no userfaultfd for the libvirt-qemu user,
    vm.unprivileged_userfaultfd=0): a clear 4xx naming post_copy, the VM untouched."""
    m = two_hosts
    uuid = await define_and_start(m, domain_xml(vm_name))
    await until(m, lambda: in_inventory(m, "local", uuid))

    job_id = await m.migration.start("local", vm_name, "h2", post_copy=True)
    async with asyncio.timeout(WAIT):
        job = await m.jobs.wait(job_id)
    if job.state == "done":  # a kernel that lets QEMU use userfaultfd
        assert m.inventory.domain("h2", uuid).state == "running"
        return
    assert job.state == "failed", job.error
    assert job.error["code"] == "unsupported" and job.error["field"] == "post_copy", job.error
    assert "Postcopy is not supported" in job.error["message"]
    local = libvirt.open(LOCAL_URI)
    try:
        assert local.lookupByUUIDString(uuid).isActive()
    finally:
        local.close()

    job_id = await m.migration.start(
        "local", vm_name, "h2", auto_converge=True, compressed=True, bandwidth_mib=100
    )
    async with asyncio.timeout(WAIT):
        job = await m.jobs.wait(job_id)
    assert job.state == "done", job.error
    await until(m, lambda: not in_inventory(m, "local", uuid))
    assert m.inventory.domain("h2", uuid).state == "running"
