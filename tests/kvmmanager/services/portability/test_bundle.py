"""Bundles against the real libvirtd: export a VM with two disks (raw and qcow2), import it
into a second pool, the disks are byte-identical; a tampered bundle is refused and leaves
no volume behind. All through libvirt (volume download/upload streams)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from tests.kvmmanager.services.backups.test_images_libvirtd import record_job_calls

from kvmmanager.core.config import Settings
from kvmmanager.core.errors import Conflict, InvalidInput
from kvmmanager.services.portability.import_plan import ImportOptions
from kvmmanager.services.storage.specs import PoolSpec, VolumeSpec
from kvmmanager.services.vms.spec import DiskSpec, VmSpec
from kvmmanager.virt.calls import job_calls
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.validate import validate_xml

pytestmark = pytest.mark.libvirtd
HOST = "local"
URI = "qemu:///system"


@pytest.fixture
async def real_manager(settings: Settings) -> AsyncIterator[Any]:
    from kvmmanager.services.manager import Manager

    settings.libvirt.default_uri = URI
    m = Manager(settings)
    await m.start()
    await m.registry.get(HOST).wait_connected(60)
    try:
        yield m
    finally:
        await m.stop()


def _drop(prefix: str) -> None:
    conn = libvirt.open(URI)
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith(prefix):
                persistent = dom.isPersistent()
                if dom.isActive():
                    dom.destroy()
                if persistent:
                    dom.undefine()
        for pool in conn.listAllStoragePools():
            if pool.name().startswith(prefix):
                if pool.isActive():
                    for vol in pool.listAllVolumes(0):
                        vol.delete(0)
                    pool.destroy()
                pool.undefine()
    finally:
        conn.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    p = f"kvmm-t-ops-{uuid.uuid4().hex[:6]}"
    base = Path(tempfile.mkdtemp(prefix=p, dir="/var/tmp"))
    os.environ["KVMM_T_OPS_DIR"] = str(base)
    try:
        yield p
    finally:
        _drop(p)
        shutil.rmtree(base, ignore_errors=True)


async def _pool(m: Any, name: str) -> str:
    target = Path(os.environ["KVMM_T_OPS_DIR"]) / name
    await m.storage.define_pool(HOST, PoolSpec(name=name, target=str(target), autostart=False))
    return name


async def _sha(m: Any, pool: str, vol: str) -> str:
    _details, download = await m.storage.open_download(HOST, pool, vol)
    digest = hashlib.sha256()
    async for chunk in download.chunks():
        digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture
async def exported_vm(real_manager: Any, prefix: str, tmp_path: Path) -> dict[str, Any]:
    m = real_manager
    pool_a = await _pool(m, f"{prefix}-a")
    data = os.urandom(3 << 20) + b"\0" * (5 << 20) + b"kvmm-t-ops end marker"
    src = tmp_path / "raw.img"
    src.write_bytes(data)
    await m.storage.upload_volume(HOST, pool_a, "data.raw", str(src), create=True)
    await m.storage.create_volume(HOST, pool_a, VolumeSpec(name="root.qcow2", capacity="64M"))
    name = f"{prefix}-vm"
    spec = VmSpec(
        name=name,
        memory_mib=64,
        disks=[
            DiskSpec(pool=pool_a, volume="root.qcow2"),
            DiskSpec(pool=pool_a, volume="data.raw"),
        ],
    )
    await m.vms.create(HOST, spec)
    return {"name": name, "pool": pool_a}


async def test_export_import_on_a_second_pool_gives_identical_disks(
    real_manager: Any, prefix: str, exported_vm: dict[str, Any]
) -> None:
    m = real_manager
    steps: list[tuple[int, int]] = []
    res = await m.export.export_bundle(
        HOST, exported_vm["name"], progress=lambda d, t, msg: steps.append((d, t))
    )
    manifest = res["manifest"]
    assert [d["target"] for d in manifest["disks"]] == ["vda", "vdb"]
    assert [d["format"] for d in manifest["disks"]] == ["qcow2", "raw"]
    assert steps and steps[-1][0] == steps[-1][1]
    path = m.export.bundle_path(res["bundle_id"])
    # Compressed: 3 MiB of random data and 5 MiB of zeros.
    assert res["bytes"] < (4 << 20)

    pool_b = await _pool(m, f"{prefix}-b")
    out = await m.export.import_bundle(HOST, path, pool_b, ImportOptions(new_identity=True))
    new_name = out["vm"]["name"]
    assert new_name == f"{exported_vm['name']}-2" and out["new_uuid"]
    assert out["volumes"] == [f"{pool_b}/{new_name}-vda.qcow2", f"{pool_b}/{new_name}-vdb.raw"]
    for disk, vol in zip(manifest["disks"], out["volumes"], strict=True):
        pool, name = vol.split("/")
        assert await _sha(m, pool, name) == disk["sha256"]
        src_pool, src_vol = disk["source"].split("/")
        assert await _sha(m, src_pool, src_vol) == disk["sha256"]

    xml = await m.export.export_xml(HOST, new_name)
    validate_xml(xml, "domain")
    disks = [d for d in Domain.from_xml(xml).devices.disks if not d.is_cdrom]
    assert {(d.source_pool, d.source_volume) for d in disks} == {
        tuple(v.split("/")) for v in out["volumes"]
    }

    # The same bundle again: the name clash is renamed, the volumes are new ones.
    again = await m.export.import_bundle(HOST, path, pool_b)
    assert again["vm"]["name"] == f"{exported_vm['name']}-3"
    m.export.delete_bundle(res["bundle_id"])
    assert not path.exists()


async def test_tampered_bundle_is_refused_and_leaves_nothing(
    real_manager: Any, prefix: str, exported_vm: dict[str, Any], tmp_path: Path
) -> None:
    m = real_manager
    res = await m.export.export_bundle(HOST, exported_vm["name"])
    good = m.export.bundle_path(res["bundle_id"])
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(good, "r:gz") as src, tarfile.open(bad, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "disks/vdb.raw":
                data = bytes([data[0] ^ 0xFF]) + data[1:]  # a change whatever the byte was
            dst.addfile(member, io.BytesIO(data))
    pool_b = await _pool(m, f"{prefix}-b")
    with pytest.raises(InvalidInput) as err:
        await m.export.import_bundle(HOST, bad, pool_b)
    assert err.value.field == "bundle" and "vdb" in err.value.message
    names = {v.name() for v in m.registry.get(HOST).conn.storagePoolLookupByName(pool_b)
             .listAllVolumes(0)}  # fmt: skip
    assert names == set()
    assert all(
        not d.name().startswith(f"{exported_vm['name']}-") for d in
        m.registry.get(HOST).conn.listAllDomains()
    )  # fmt: skip

    not_a_bundle = tmp_path / "x.tar.gz"
    not_a_bundle.write_bytes(b"hello")
    with pytest.raises(InvalidInput) as err:
        await m.export.import_bundle(HOST, not_a_bundle, pool_b)
    assert err.value.field == "bundle"


async def test_running_vm_is_refused(real_manager: Any, prefix: str) -> None:
    m = real_manager
    conn = m.registry.get(HOST).conn
    dom = Domain(type="qemu", name=f"{prefix}-run", memory=32 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch = "hvm", "x86_64"
    conn.createXML(dom.to_xml(), 0)
    with pytest.raises(Conflict) as err:
        await m.export.export_bundle(HOST, f"{prefix}-run")
    assert err.value.field == "vm"


async def test_inside_a_job_every_export_and_import_call_has_a_deadline(
    real_manager: Any, prefix: str, exported_vm: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export or import runs as a job, where calls default to the unbounded `job`
    kind: its preparation (VM read, plan, volume lookups), each stream chunk, the define
    and the cleanup must each carry a deadline, so a frozen host fails the job naming
    host and operation instead of hanging it (issue 21)."""
    m = real_manager
    pool_b = await _pool(m, f"{prefix}-b")
    unbounded = record_job_calls(m.registry.get(HOST), monkeypatch)
    with job_calls():
        res = await m.export.export_bundle(HOST, exported_vm["name"])
        path = m.export.bundle_path(res["bundle_id"])
        out = await m.export.import_bundle(HOST, path, pool_b, ImportOptions(new_identity=True))
    assert out["vm"]["name"] == f"{exported_vm['name']}-2"
    assert unbounded.seen and unbounded == [], unbounded
    m.export.delete_bundle(res["bundle_id"])


async def test_a_bundle_in_a_shared_exports_dir_is_readable_by_its_owner_only(
    real_manager: Any, prefix: str, tmp_path: Path
) -> None:
    """`fleet.exports_dir` may be a directory that exists already, shared and open to
    others, under a permissive umask: the bundle (which holds the VM's disks) is still
    0600 (issue 16: it was written -rw-r--r--)."""
    m = real_manager
    conn = m.registry.get(HOST).conn
    dom = Domain(type="qemu", name=f"{prefix}-shared", memory=32 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch = "hvm", "x86_64"
    conn.defineXML(dom.to_xml())
    shared = tmp_path / "shared-exports"
    shared.mkdir()
    shared.chmod(0o777)
    m.settings.fleet.exports_dir = shared
    old = os.umask(0o002)
    try:
        res = await m.export.export_bundle(HOST, f"{prefix}-shared")
    finally:
        os.umask(old)
    path = m.export.bundle_path(res["bundle_id"])
    assert path.parent == shared
    assert path.stat().st_mode & 0o777 == 0o600
    assert res["manifest"]["vm"] == f"{prefix}-shared"
    m.export.delete_bundle(res["bundle_id"])
