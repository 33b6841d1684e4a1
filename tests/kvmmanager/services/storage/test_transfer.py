"""Volume upload/download through libvirt streams, against the real libvirtd.

libvirt's test driver has no volume streams (virStorageVolUpload is "not supported"), so
every stream test here needs `qemu:///system`. Each test gets its own dir pool under a
fresh /var/tmp/kvmm-t-sto-* directory, removed with everything in it afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from tests.kvmmanager.services.backups.test_images_libvirtd import record_job_calls

from kvmmanager.core.config import Settings
from kvmmanager.core.errors import Cancelled, Conflict, InvalidInput, NotFound
from kvmmanager.services.storage import transfer
from kvmmanager.services.storage.specs import PoolSpec, VolumeSpec
from kvmmanager.virt.calls import job_calls

HOST = "local"
MIB = 1 << 20


# ---- pure helpers (no libvirt) --------------------------------------------------------


async def _collect(source: Any, chunk_size: int) -> list[bytes]:
    return [c async for c in transfer.iter_source(source, chunk_size)]


async def test_iter_source_reads_a_file_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    data = os.urandom(10_000)
    path.write_bytes(data)
    chunks = await _collect(str(path), 4096)
    assert [len(c) for c in chunks] == [4096, 4096, 1808]
    assert b"".join(chunks) == data


async def test_iter_source_coalesces_small_pieces_of_sync_and_async_iterators() -> None:
    pieces = [b"a" * 100] * 25

    async def agen() -> AsyncIterator[bytes]:
        for p in pieces:
            yield p

    for source in (iter(pieces), agen()):
        chunks = await _collect(source, 1000)
        assert [len(c) for c in chunks] == [1000, 1000, 500]


def test_source_size_of_a_missing_file_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as exc:
        transfer.source_size(str(tmp_path / "nope"))
    assert exc.value.field == "source"


# ---- real libvirtd -------------------------------------------------------------------


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
    except libvirt.libvirtError:
        conn.close()
        return
    try:
        if pool.isActive():
            for vol in pool.listAllVolumes(0):
                vol.delete(0)
            pool.destroy()
        pool.undefine()
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


def _volume_names(pool: str) -> list[str]:
    conn = libvirt.open("qemu:///system")
    try:
        return sorted(v.name() for v in conn.storagePoolLookupByName(pool).listAllVolumes(0))
    finally:
        conn.close()


async def _download(manager: Any, pool: str, name: str) -> tuple[int, str]:
    _details, dl = await manager.storage.open_download(HOST, pool, name)
    digest = hashlib.sha256()
    async for chunk in dl.chunks(chunk_size=256 * 1024):
        digest.update(chunk)
    return dl.done, digest.hexdigest()


@pytest.mark.libvirtd
async def test_upload_a_few_mib_and_download_it_back(
    real_manager: Any, real_pool: str, tmp_path: Path
) -> None:
    data = os.urandom(5 * MIB + 12345)
    src = tmp_path / "disk.img"
    src.write_bytes(data)
    seen: list[tuple[int, int | None]] = []

    details = await real_manager.storage.upload_volume(
        HOST, real_pool, "up.raw", str(src), create=True,
        progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip

    assert details.capacity == len(data)
    assert details.format == "raw"
    assert seen[0] == (0, len(data)) and seen[-1] == (len(data), len(data))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    size, digest = await _download(real_manager, real_pool, "up.raw")
    assert size == len(data)
    assert digest == hashlib.sha256(data).hexdigest()


@pytest.mark.libvirtd
async def test_upload_from_an_async_iterator_of_chunks(real_manager: Any, real_pool: str) -> None:
    data = os.urandom(3 * MIB)

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 64 * 1024):
            yield data[i : i + 64 * 1024]

    await real_manager.storage.upload_volume(
        HOST, real_pool, "it.raw", body(), size=len(data), create=True
    )
    assert await _download(real_manager, real_pool, "it.raw") == (
        len(data), hashlib.sha256(data).hexdigest(),
    )  # fmt: skip


@pytest.mark.libvirtd
async def test_upload_a_qcow2_image_keeps_its_format(
    real_manager: Any, real_pool: str, tmp_path: Path
) -> None:
    image = tmp_path / "base.qcow2"
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"]
    await asyncio.to_thread(subprocess.run, cmd, check=True)
    details = await real_manager.storage.upload_volume(
        HOST, real_pool, "base.qcow2", str(image), create=True, format="qcow2"
    )
    assert details.format == "qcow2"
    assert details.capacity == 64 * MIB


@pytest.mark.libvirtd
async def test_upload_declared_qcow2_that_is_not_leaves_nothing(
    real_manager: Any, real_pool: str, tmp_path: Path
) -> None:
    src = tmp_path / "fake.qcow2"
    src.write_bytes(os.urandom(MIB))
    with pytest.raises(InvalidInput) as exc:
        await real_manager.storage.upload_volume(
            HOST, real_pool, "fake.qcow2", str(src), create=True, format="qcow2"
        )
    assert exc.value.field == "format"
    assert _volume_names(real_pool) == []


@pytest.mark.libvirtd
async def test_cancelled_upload_deletes_the_new_volume(real_manager: Any, real_pool: str) -> None:
    chunks = [os.urandom(MIB) for _ in range(4)]
    sent: list[int] = []

    def progress(done: int, total: int | None) -> None:
        sent.append(done)

    def cancelled() -> bool:
        # Cancel once half the data went through libvirt.
        return bool(sent) and sent[-1] >= 2 * MIB

    with pytest.raises(Cancelled):
        await real_manager.storage.upload_volume(
            HOST, real_pool, "cancel.raw", iter(chunks), size=4 * MIB, create=True,
            progress=progress, cancelled=cancelled,
        )  # fmt: skip
    assert 0 < sent[-1] < 4 * MIB
    assert _volume_names(real_pool) == []


@pytest.mark.libvirtd
async def test_failing_source_and_short_source_leave_no_volume(
    real_manager: Any, real_pool: str
) -> None:
    def broken() -> Iterator[bytes]:
        yield os.urandom(MIB)
        raise OSError("disk read error")

    with pytest.raises(OSError, match="disk read error"):
        await real_manager.storage.upload_volume(
            HOST, real_pool, "broken.raw", broken(), size=3 * MIB, create=True
        )
    with pytest.raises(InvalidInput) as exc:
        await real_manager.storage.upload_volume(
            HOST, real_pool, "short.raw", iter([b"x" * MIB]), size=2 * MIB, create=True
        )
    assert exc.value.field == "size"
    with pytest.raises(InvalidInput) as exc:
        await real_manager.storage.upload_volume(
            HOST, real_pool, "long.raw", iter([b"x" * MIB] * 3), size=2 * MIB, create=True
        )
    assert exc.value.field == "size"
    assert _volume_names(real_pool) == []


@pytest.mark.libvirtd
async def test_upload_into_existing_volume_only_when_not_creating(
    real_manager: Any, real_pool: str
) -> None:
    storage = real_manager.storage
    await storage.create_volume(
        HOST, real_pool, VolumeSpec(name="ex.raw", capacity=MIB, format="raw")
    )
    data = os.urandom(MIB)
    with pytest.raises(Conflict):
        await storage.upload_volume(HOST, real_pool, "ex.raw", iter([data]), size=MIB, create=True)
    with pytest.raises(NotFound):
        await storage.upload_volume(HOST, real_pool, "missing.raw", iter([data]), size=MIB)
    await storage.upload_volume(HOST, real_pool, "ex.raw", iter([data]), size=MIB)
    assert await _download(real_manager, real_pool, "ex.raw") == (
        MIB, hashlib.sha256(data).hexdigest(),
    )  # fmt: skip


@pytest.mark.libvirtd
async def test_download_to_file_and_abandoned_download(
    real_manager: Any, real_pool: str, tmp_path: Path
) -> None:
    data = os.urandom(2 * MIB)
    await real_manager.storage.upload_volume(
        HOST, real_pool, "d.raw", iter([data]), size=len(data), create=True
    )
    _details, dl = await real_manager.storage.open_download(HOST, real_pool, "d.raw")
    assert dl.size == len(data)
    out = tmp_path / "out.raw"
    assert await transfer.download_to_file(dl, out) == len(data)
    assert out.read_bytes() == data

    # A reader that stops early aborts the stream; the volume stays usable.
    _details, dl = await real_manager.storage.open_download(HOST, real_pool, "d.raw")
    gen = dl.chunks(chunk_size=64 * 1024)
    first = await anext(gen)
    assert first == data[: len(first)]
    await gen.aclose()
    assert await _download(real_manager, real_pool, "d.raw") == (
        len(data), hashlib.sha256(data).hexdigest(),
    )  # fmt: skip


@pytest.mark.libvirtd
async def test_inside_a_job_every_transfer_call_has_a_deadline(
    real_manager: Any, real_pool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls made in a job default to the unbounded `job` kind: each call of an upload
    (new stream, start, every chunk, finish), a download (every chunk) and the volume's
    delete must say its kind, so a frozen host fails the job, naming host and operation,
    instead of hanging it (issue 21)."""
    hc = real_manager.registry.get(HOST)
    unbounded = record_job_calls(hc, monkeypatch)
    data = os.urandom(2 * MIB + 7)
    with job_calls():
        await real_manager.storage.upload_volume(
            HOST, real_pool, "job.raw", [data], size=len(data), create=True
        )
        size, digest = await _download(real_manager, real_pool, "job.raw")
        await real_manager.storage.delete_volume(HOST, real_pool, "job.raw")
    assert size == len(data) and digest == hashlib.sha256(data).hexdigest()
    assert unbounded.seen and unbounded == [], unbounded
    assert _volume_names(real_pool) == []
