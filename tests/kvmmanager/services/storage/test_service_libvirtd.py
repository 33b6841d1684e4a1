"""StorageService against the real libvirtd: a dir pool in a fresh /var/tmp directory,
volume create, clone (a job with progress), resize, and deleting a pool with its storage."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from kvmmanager.core.config import Settings
from kvmmanager.core.errors import Conflict, InvalidInput
from kvmmanager.services.storage.specs import PoolSpec, VolumeSpec
from kvmmanager.virt.events import Event

pytestmark = pytest.mark.libvirtd

HOST = "local"
MIB = 1 << 20


@pytest.fixture
async def real_manager(settings: Settings) -> AsyncIterator[Any]:
    from kvmmanager.services.manager import Manager

    settings.libvirt.default_uri = "qemu:///system"
    m = Manager(settings)
    await m.start()
    await m.registry.get(HOST).wait_connected(60)
    try:
        yield m
    finally:
        await m.stop()


@pytest.fixture
def pool_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kvmm-t-sto-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _drop_pool(name: str) -> None:
    conn = libvirt.open("qemu:///system")
    try:
        pool = conn.storagePoolLookupByName(name)
        if pool.isActive():
            for vol in pool.listAllVolumes(0):
                vol.delete(0)
            pool.destroy()
        pool.undefine()
    except libvirt.libvirtError:
        pass
    finally:
        conn.close()


@pytest.fixture
async def real_pool(real_manager: Any, pool_dir: Path) -> AsyncIterator[str]:
    name = f"kvmm-t-sto-{uuid.uuid4().hex[:8]}"
    spec = PoolSpec(name=name, target=str(pool_dir / "pool"), autostart=False)
    await real_manager.storage.define_pool(HOST, spec)
    try:
        yield name
    finally:
        _drop_pool(name)


async def test_dir_pool_is_built_in_its_directory(
    real_manager: Any, real_pool: str, pool_dir: Path
) -> None:
    details = await real_manager.storage.get_pool(HOST, real_pool)
    assert details.active and details.target == str(pool_dir / "pool")
    assert (pool_dir / "pool").is_dir()
    assert details.capacity > 0 and 0 < details.available <= details.capacity


async def test_volume_create_clone_resize(real_manager: Any, real_pool: str) -> None:
    storage = real_manager.storage
    raw = await storage.create_volume(
        HOST, real_pool, VolumeSpec(name="src.raw", capacity=64 * MIB, format="raw",
                                    preallocate=True)
    )  # fmt: skip
    assert raw.allocation >= 64 * MIB
    qcow = await storage.create_volume(
        HOST, real_pool, VolumeSpec(name="disk.qcow2", capacity="1G")
    )
    assert qcow.format == "qcow2" and qcow.allocation < 10 * MIB
    # qcow2 v3, not libvirt's v2 default: incremental backups need its dirty bitmaps.
    header = await asyncio.to_thread(Path(qcow.path).read_bytes)
    assert header[:8] == b"QFI\xfb\x00\x00\x00\x03"

    progress: list[Event] = []
    with real_manager.bus.subscribe(
        predicate=lambda e: e.kind in ("job.progress", "job.done")
    ) as sub:
        job_id = await storage.clone_volume(
            HOST, real_pool, "src.raw", "copy.qcow2", format="qcow2"
        )
        async with asyncio.timeout(120):
            while True:
                event = await sub.get()
                if event.subject != job_id:
                    continue
                progress.append(event)
                if event.kind == "job.done":
                    break
    assert progress[-1].data["state"] == "done", progress[-1].data
    assert progress[-1].data["done"] == progress[-1].data["total"] > 0
    copy = await storage.get_volume(HOST, real_pool, "copy.qcow2")
    assert copy.format == "qcow2" and copy.capacity == 64 * MIB

    grown = await storage.resize_volume(HOST, real_pool, "disk.qcow2", "2G")
    assert grown.capacity == 2 << 30
    with pytest.raises(InvalidInput) as exc:
        await storage.resize_volume(HOST, real_pool, "disk.qcow2", "1G")
    assert exc.value.field == "capacity"
    await storage.create_volume(
        HOST, real_pool, VolumeSpec(name="thin.raw", capacity=64 * MIB, format="raw")
    )
    shrunk = await storage.resize_volume(HOST, real_pool, "thin.raw", 32 * MIB, shrink=True)
    assert shrunk.capacity == 32 * MIB
    # A preallocated file cannot shrink below what it holds: libvirt says so, as a 422.
    with pytest.raises(InvalidInput):
        await storage.resize_volume(HOST, real_pool, "src.raw", 32 * MIB, shrink=True)


async def test_delete_pool_with_storage_removes_directory(
    real_manager: Any, pool_dir: Path
) -> None:
    storage = real_manager.storage
    name = f"kvmm-t-sto-{uuid.uuid4().hex[:8]}"
    target = pool_dir / "gone"
    await storage.define_pool(HOST, PoolSpec(name=name, target=str(target), autostart=False))
    try:
        await storage.create_volume(HOST, name, VolumeSpec(name="v.qcow2", capacity="1G"))
        with pytest.raises(Conflict):
            await storage.pool_action(HOST, name, "start")
        await storage.delete_pool(HOST, name, delete_volumes=True)
        assert not target.exists()
    finally:
        _drop_pool(name)


async def test_starting_a_pool_whose_directory_is_gone_is_a_conflict(
    real_manager: Any, pool_dir: Path
) -> None:
    storage = real_manager.storage
    name = f"kvmm-t-sto-{uuid.uuid4().hex[:8]}"
    spec = PoolSpec(name=name, target=str(pool_dir / "never-built"), build=False,
                    start=False, autostart=False)  # fmt: skip
    await storage.define_pool(HOST, spec)
    try:
        with pytest.raises(Conflict) as exc:
            await storage.pool_action(HOST, name, "start")
        assert exc.value.field == "pool" and "never-built" in exc.value.message
        # A spec that fails while starting leaves nothing defined.
        with pytest.raises(Conflict) as exc:
            await storage.define_pool(
                HOST, PoolSpec(name=name + "-b", target=str(pool_dir / "nope"), build=False)
            )
        assert exc.value.field == "target"
        assert name + "-b" not in [p.name for p in await storage.list_pools(HOST)]
    finally:
        _drop_pool(name)
