"""Backups with libvirt's backup API against the real libvirtd (qemu:///system), on a VM
that boots nothing (SeaBIOS waits forever; QEMU still runs its disks). The disk's content
is uploaded through the storage API beforehand; restored disks are downloaded through
libvirt streams and compared, as guest-visible bytes, with the source's."""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound
from kvmmanager.services.backups.policies import PolicySpec
from kvmmanager.services.storage import transfer
from kvmmanager.virt.calls import job_calls
from kvmmanager.virt.xml.devices import Disk
from kvmmanager.virt.xml.domain import Domain

pytestmark = pytest.mark.libvirtd
URI = "qemu:///system"
PREFIX = "kvmm-t-bk-"
MIB = 1024 * 1024


def run(*cmd: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.fixture
def settings(settings):
    settings.libvirt.default_uri = URI
    return settings


@pytest.fixture
def lab(libvirtd_lab: Any, tmp_path: Path) -> dict[str, Any]:
    return {**libvirtd_lab(PREFIX), "tmp": tmp_path}


async def make_vm(manager: Any, lab: dict[str, Any], fmt: str = "qcow2") -> tuple[str, str]:
    """A domain whose vda holds 0x5a at 0..256k and 0x11 at 1M..1M+64k, uploaded through
    libvirt; (name, disk path)."""
    name = lab["name"]
    local = lab["tmp"] / f"src.{fmt}"
    opts = ["-o", "compat=1.1"] if fmt == "qcow2" else []
    run("qemu-img", "create", "-q", "-f", fmt, *opts, str(local), str(16 * MIB))
    run(
        "qemu-io", "-f", fmt, "-c", "write -P 0x5a 0 256k", "-c", "write -P 0x11 1M 64k", str(local)
    )
    vol = await manager.storage.upload_volume(
        "local", name, f"{name}-disk0.{fmt}", str(local), create=True, format=fmt
    )
    dom = Domain(type="qemu", name=name, memory=64 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch, dom.os.machine = "hvm", "x86_64", "pc"
    disk = Disk(type="file", device="disk", driver_name="qemu", driver_type=fmt)
    disk.source_file, disk.target_dev, disk.target_bus = vol.path, "vda", "virtio"
    dom.devices.add(disk)
    lab["conn"].defineXML(dom.to_xml())
    return name, vol.path


async def content_hash(manager: Any, lab: dict[str, Any], path: str) -> str:
    """sha256 of the guest-visible bytes of a volume, downloaded through libvirt."""
    vol = lab["conn"].storageVolLookupByPath(path)
    pool = vol.storagePoolLookupByVolume().name()
    _details, download = await manager.storage.open_download("local", pool, vol.name())
    local = lab["tmp"] / f"dl-{uuid.uuid4().hex[:6]}"
    await transfer.download_to_file(download, local)
    raw = local.with_suffix(".raw")
    run("qemu-img", "convert", "-O", "raw", str(local), str(raw))
    return hashlib.sha256(raw.read_bytes()).hexdigest()


def policy(manager: Any, lab: dict[str, Any], **kw: Any) -> dict[str, Any]:
    spec = PolicySpec(
        name=f"p{uuid.uuid4().hex[:6]}",
        vms=[{"host": "local", "vm": lab["name"]}],
        method="backup",
        pool=lab["name"],
        **kw,
    )
    return manager.backups.create(spec)


async def test_full_incremental_verify_restore(manager: Any, lab: dict[str, Any]) -> None:
    await manager.registry.get("local").wait_connected(60)
    name, src = await make_vm(manager, lab)
    p = policy(manager, lab, keep_last=5, full_every=3)
    images = manager.backups.images
    dom = lab["conn"].lookupByName(name)
    dom.create()
    original = await content_hash(manager, lab, src)

    full = await images.take(p, "local", name)
    assert full["kind"] == "full" and full["status"] == "ok", full
    assert full["checkpoint"] in [c.getName() for c in dom.listAllCheckpoints()]
    assert full["consistency"]["level"] == "crash-consistent"  # no agent in this VM
    assert len(full["volumes"]) == 1 and len(full["volumes"][0]["sha256"]) == 64
    v = await images.verify(full["id"])
    assert v["status"] == "ok", v
    assert v["volumes"][0]["header"]["version"] == 3
    assert v["volumes"][0]["header"]["backing_file"] is None

    # Change the data while the VM is off; the next backup starts it paused.
    dom.destroy()
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x77 1M 64k", src)
    changed = await content_hash(manager, lab, src)
    assert changed != original
    inc = await images.take(p, "local", name)
    assert inc["kind"] == "incremental" and inc["parent_id"] == full["id"], inc
    assert inc["consistency"]["level"] == "offline"
    assert not dom.isActive()
    # Only the changed 64k cluster was copied.
    assert inc["job"]["disk_total"] == 64 * 1024
    v = await images.verify(inc["id"])
    assert v["status"] == "ok", v
    assert v["volumes"][0]["header"]["backing_file"] == full["volumes"][0]["path"]

    r1 = await images.restore(full["id"], mode="new", name=f"{name}-r1")
    r2 = await images.restore(inc["id"], mode="new", name=f"{name}-r2")
    assert await content_hash(manager, lab, r1["volumes"][0]) == original
    assert await content_hash(manager, lab, r2["volumes"][0]) == changed
    d1, d2 = lab["conn"].lookupByName(f"{name}-r1"), lab["conn"].lookupByName(f"{name}-r2")
    assert d1.UUIDString() != dom.UUIDString() != d2.UUIDString()
    assert "backing-filename" not in run("qemu-img", "info", "--output=json", r2["volumes"][0])

    # Bad input.
    with pytest.raises(Conflict):  # name clash
        await images.restore(full["id"], mode="new", name=f"{name}-r1")
    with pytest.raises(InvalidInput):  # over the original without confirming
        await images.restore(full["id"], mode="original")
    dom.create()
    with pytest.raises(Conflict, match="running"):
        await images.restore(full["id"], mode="original", confirm=True)
    dom.destroy()
    with pytest.raises(Conflict, match="base of incremental"):
        await images.delete(full["id"])
    with pytest.raises(NotFound):
        await images.take(p, "local", f"{name}-nope")
    with pytest.raises(NotFound):
        await images.verify(full["id"], host="local", vm=f"{name}-r1")  # not that VM's

    # Over the original: back to the full backup's data; checkpoints dropped.
    r = await images.restore(full["id"], mode="original", confirm=True)
    # Both checkpoints (the full's and the incremental's) went, and both are reported
    # (issue 17 item 14: only the root was).
    assert sorted(r["checkpoints_dropped"]) == sorted([full["checkpoint"], inc["checkpoint"]])
    assert dom.listAllCheckpoints() == []
    assert await content_hash(manager, lab, src) == original
    # With the checkpoints gone the next backup is full again.
    again = await images.take(p, "local", name)
    assert again["kind"] == "full" and "checkpoint is gone" in again["message"]

    # A VM with checkpoints can still be deleted (their metadata goes with it); its
    # backups stay, and deleting one whose VM is gone needs no checkpoint cleanup.
    assert dom.listAllCheckpoints()
    await manager.vms.delete("local", name)
    # Delete newest first; the volumes go with the records.
    for b in (again, inc, full):
        await images.delete(b["id"])
    assert images.list(vm=name) == []
    names = {v.name() for v in lab["pool"].listAllVolumes()}
    assert not any(p["name"] in n for n in names)


async def test_retention_and_raw_disk(manager: Any, lab: dict[str, Any]) -> None:
    await manager.registry.get("local").wait_connected(60)
    name, _src = await make_vm(manager, lab, fmt="raw")
    p = policy(manager, lab, keep_last=1, full_every=1)
    images = manager.backups.images
    dom = lab["conn"].lookupByName(name)
    dom.create()
    with pytest.raises(InvalidInput, match="qcow2"):
        await images.take(p, "local", name, kind="incremental")
    first = await images.take(p, "local", name)
    assert first["kind"] == "full" and first["checkpoint"] is None
    assert "raw" in first["message"]
    from datetime import UTC, datetime, timedelta

    second = await images.take(p, "local", name, now=datetime.now(UTC) + timedelta(seconds=2))
    assert second["pruned"] == [first["id"]]
    assert [b["id"] for b in images.list(vm=name)] == [second["id"]]
    names = {v.name() for v in lab["pool"].listAllVolumes()}
    assert first["volumes"][0]["volume"] not in names
    assert second["volumes"][0]["volume"] in names
    await images.delete(second["id"])


class RecordedCalls(list[str]):
    """The operation names of the calls run without a deadline (kind "job"), and in
    `seen` those of every call, so a test can tell "none unbounded" from "none seen"."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []


def record_job_calls(hc: Any, monkeypatch: pytest.MonkeyPatch) -> RecordedCalls:
    """Record the calls `hc` runs, as they are made; the calls themselves run as before."""
    calls = RecordedCalls()
    real = hc.workers.call

    async def record(
        fn: Any, *, op: str, kind: str, deadline: float | None, vm: str | None = None
    ) -> Any:
        calls.seen.append(op)
        if kind == "job":
            calls.append(op)
        return await real(fn, op=op, kind=kind, deadline=deadline, vm=vm)

    monkeypatch.setattr(hc.workers, "call", record)
    return calls


async def test_in_a_backup_job_every_call_but_the_digest_stream_has_a_deadline(
    manager: Any, lab: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """libvirt copies in a backup job of its own: the manager's calls around it (look up,
    create the targets, start paused, begin, follow, result, clean up) are all short and
    must each have a deadline, so a frozen host fails the backup instead of hanging it.
    Only the digest's stream of the stored bytes (chunk by chunk) stays a job's."""
    hc = manager.registry.get("local")
    await hc.wait_connected(60)
    name, _src = await make_vm(manager, lab)
    p = policy(manager, lab, keep_last=5)
    unbounded = record_job_calls(hc, monkeypatch)
    with job_calls():  # as the job runner runs a scheduled backup
        out = await manager.backups.images.take(p, "local", name)
    assert out["status"] == "ok", out
    assert unbounded.seen, "no call recorded (nothing tested)"
    streamed = {"open_download", "virStream.recv", "virStream.finish", "virStream.abort"}
    assert set(unbounded) <= streamed | {"virStorageVol.download", "virConnect.newStream"}, (
        unbounded
    )
