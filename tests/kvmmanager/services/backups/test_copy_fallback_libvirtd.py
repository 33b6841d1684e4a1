# ruff: noqa: F811 (pytest fixtures imported from the backup API tests)
"""The copy fallback (temporary external snapshot, copy of the base, active block
commit) against the real libvirtd, on a running VM with a qcow2 disk of known content:
as policy method 'copy', and as what method 'backup' does when libvirt refuses its
backup API as unsupported. Afterwards the VM runs on its original file again (no overlay
in its live or persistent XML, no overlay volume left) and the backup volume holds the
disk's content."""

from __future__ import annotations

from typing import Any

import libvirt
import pytest
from tests.kvmmanager.services.backups.test_images_libvirtd import (  # noqa: F401 (fixtures)
    content_hash,
    lab,
    make_vm,
    policy,
    record_job_calls,
    settings,
)

from kvmmanager.services.backups import copy_fallback as fb
from kvmmanager.services.backups import take as tk
from kvmmanager.virt.calls import job_calls
from kvmmanager.virt.xml.domain import Domain

pytestmark = [pytest.mark.libvirtd, pytest.mark.vm]


def on_original(dom: libvirt.virDomain, src: str) -> None:
    for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
        (disk,) = [d for d in Domain.from_xml(dom.XMLDesc(flags)).devices.disks]
        assert disk.source_file == src, flags
        assert "kvmm-copy" not in dom.XMLDesc(flags)


def no_overlay_left(lab: dict[str, Any]) -> None:
    lab["pool"].refresh(0)
    assert not [v for v in lab["pool"].listAllVolumes() if "kvmm-copy" in v.name()]
    assert lab["conn"].lookupByName(lab["name"]).blockJobInfo("vda", 0) == {}


async def check_copy(manager: Any, lab: dict[str, Any], b: dict[str, Any], want: str) -> None:
    assert b["status"] == "ok" and b["kind"] == "full" and b["checkpoint"] is None, b
    assert fb.NOTE in b["message"]
    (vol,) = b["volumes"]
    assert await content_hash(manager, lab, vol["path"]) == want
    v = await manager.backups.images.verify(b["id"])
    assert v["status"] == "ok", v
    assert v["volumes"][0]["header"]["backing_file"] is None  # standalone


async def test_copy_method_on_a_running_vm(manager: Any, lab: dict[str, Any]) -> None:
    await manager.registry.get("local").wait_connected(60)
    name, src = await make_vm(manager, lab)
    want = await content_hash(manager, lab, src)
    dom = lab["conn"].lookupByName(name)
    dom.create()
    p = policy(manager, lab, keep_last=3)
    seen: list[tuple[int, int, str]] = []

    class Progress:
        def __call__(self, done: int, total: int, message: str) -> None:
            seen.append((done, total, message))

        def cancelled(self) -> bool:
            return False

    b = await manager.backups.images.take({**p, "method": "copy"}, "local", name,
                                          progress=Progress())  # fmt: skip
    assert dom.isActive()
    on_original(dom, src)
    no_overlay_left(lab)
    await check_copy(manager, lab, b, want)
    messages = [m for _, _, m in seen]
    assert messages[0] == "temporary snapshot" and "copying vda" in messages
    assert messages[-2:] == ["block commit", "done"] and seen[-1][0] == seen[-1][1]
    assert not dom.listAllCheckpoints()


async def test_backup_method_falls_back_when_libvirt_has_no_backup_api(
    manager: Any, lab: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    await manager.registry.get("local").wait_connected(60)
    name, src = await make_vm(manager, lab)
    want = await content_hash(manager, lab, src)
    dom = lab["conn"].lookupByName(name)
    dom.create()
    p = policy(manager, lab, keep_last=3)  # method backup
    real_begin = tk.begin
    calls = []

    class NoBackupApi:
        """The VM as a libvirt without virDomainBackupBegin answers it."""

        def backupBegin(self, *args: Any) -> None:
            calls.append(args)
            exc = libvirt.libvirtError("this function is not supported by the connection driver")
            exc.err = (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_FROM_DOMAIN,
                       "this function is not supported: virDomainBackupBegin", 2,
                       None, None, None, 0, 0)  # fmt: skip
            raise exc

    monkeypatch.setattr(tk, "begin", lambda _dom, bxml, cxml: real_begin(NoBackupApi(), bxml, cxml))
    b = await manager.backups.images.take(p, "local", name)
    assert len(calls) == 1
    assert "backup API is not available" in b["message"], b["message"]
    assert dom.isActive()
    on_original(dom, src)
    no_overlay_left(lab)
    await check_copy(manager, lab, b, want)
    assert not dom.listAllCheckpoints()  # the refused attempt's checkpoint never existed


async def test_in_a_copy_backup_only_the_disk_copies_and_the_digest_stream_have_no_deadline(
    manager: Any, lab: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot, the overlays, each block-commit step and the clean-up are short calls
    with deadlines, so a frozen host fails the backup instead of hanging it; the copy of
    a disk and the digest's stream of the stored bytes stay a job's."""
    hc = manager.registry.get("local")
    await hc.wait_connected(60)
    name, _src = await make_vm(manager, lab)
    p = policy(manager, lab, keep_last=3)
    unbounded = record_job_calls(hc, monkeypatch)
    with job_calls():  # as the job runner runs a scheduled backup
        b = await manager.backups.images.take({**p, "method": "copy"}, "local", name)
    assert b["status"] == "ok", b
    assert "copy disk vda" in unbounded, unbounded
    streamed = {"open_download", "virStream.recv", "virStream.finish", "virStream.abort"}
    allowed = streamed | {"copy disk vda", "virStorageVol.download", "virConnect.newStream"}
    assert set(unbounded) <= allowed, unbounded
