"""A VM with backup checkpoints (QEMU dirty bitmaps in its qcow2) and an internal
snapshot, against the real libvirtd (qemu:///system): QEMU cannot revert an internal
snapshot of an image holding bitmaps, so the revert is refused up front with a reason and
a way out, not left to libvirt's raw 'internal error' (issue 17 independent try: the
restore answered 500)."""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

import libvirt
import pytest
from tests.libvirtd_pools import qcow2_domain_xml

from kvmmanager.core.errors import Conflict
from kvmmanager.services.backups.policies import PolicySpec
from kvmmanager.virt.xml.volume import Volume

pytestmark = pytest.mark.libvirtd
URI = "qemu:///system"
PREFIX = "kvmm-t-snapcp-"


@pytest.fixture
def settings(settings):
    settings.libvirt.default_uri = URI
    return settings


@pytest.fixture
def lab(libvirtd_lab: Any) -> dict[str, Any]:
    return libvirtd_lab(PREFIX)


async def snapshot_then_backup(manager: Any, lab: dict[str, Any]) -> dict[str, Any]:
    """A stopped qcow2 VM with an internal snapshot by a snapshot policy, then a backup
    (with its checkpoint) by a `--method backup` policy."""
    await manager.registry.get("local").wait_connected(60)
    name, conn = lab["name"], lab["conn"]
    v = Volume(name=f"{name}.qcow2", capacity=16 * 1024 * 1024, target_format="qcow2")
    v.compat = "1.1"  # dirty bitmaps need qcow2 v3
    vol = lab["pool"].createXML(v.to_xml(), 0)
    dom = conn.defineXML(qcow2_domain_xml(name, vol.path()))
    tag = uuid.uuid4().hex[:6]
    vms = [{"host": "local", "vm": name}]
    nightly = manager.backups.create(PolicySpec(name=f"n{tag}", vms=vms))
    weekly = manager.backups.create(PolicySpec(name=f"w{tag}", vms=vms, method="backup", pool=name))
    # (libvirt 9.0 refuses an offline snapshot once a checkpoint exists, so the snapshot
    # comes first here; the tester's running VM took them the other way round.)
    run = await manager.backups.run(nightly["name"])
    assert run["status"] == "ok", run["results"][0]["error"]
    taken = await manager.backups.images.take(weekly, "local", name)
    assert taken["status"] == "ok" and taken["checkpoint"], taken["message"]
    assert not dom.isActive()
    return {"name": name, "dom": dom, "path": vol.path(), "nightly": nightly,
            "weekly": weekly, "snap": run["snapshot"], "taken": taken}  # fmt: skip


def remove_bitmap(path: str, bitmap: str) -> None:
    r = subprocess.run(["qemu-img", "bitmap", "--remove", path, bitmap],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr


def drop_snapshots(dom: libvirt.virDomain) -> None:
    # The lab's teardown undefines with checkpoint metadata only.
    for s in dom.listAllSnapshots():
        s.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)


async def test_revert_with_backup_checkpoints_is_refused_with_a_way_out(
    manager: Any, lab: dict[str, Any]
) -> None:
    vm = await snapshot_then_backup(manager, lab)
    name, dom, snap, taken = vm["name"], vm["dom"], vm["snap"], vm["taken"]
    nightly, weekly = vm["nightly"], vm["weekly"]
    try:
        with pytest.raises(Conflict) as refused:
            await manager.backups.restore(nightly["name"], "local", name, snap, confirm=True)
        msg = str(refused.value)
        assert f"backup {taken['id']} (policy '{weekly['name']}')" in msg, msg
        assert taken["checkpoint"] in msg and "dirty bitmaps" in msg and f"'{snap}'" in msg, msg
        assert f"kvm-manager backup restore-image {name} {taken['id']} --name" in msg, msg
        assert f"kvm-manager backup delete-image {name} ID, for ID in {taken['id']}" in msg, msg
        assert refused.value.status == 409
        # The plain snapshot revert is the same call, refused the same way.
        with pytest.raises(Conflict, match="dirty bitmaps"):
            await manager.snapshots.revert("local", name, snap)

        # The way out it names works: the VM started, the backup (and with it its
        # checkpoint and bitmap) deleted, the snapshot reverts.
        dom.create()
        await manager.backups.images.delete(taken["id"])
        assert dom.listAllCheckpoints() == []
        r = await manager.backups.restore(nightly["name"], "local", name, snap, confirm=True)
        assert r["snapshot"] == snap and not r["running"]
    finally:
        drop_snapshots(dom)


async def test_bitmaps_left_without_checkpoint_are_a_conflict_too(
    manager: Any, lab: dict[str, Any]
) -> None:
    """Deleting a backup of a stopped VM drops only its checkpoint's metadata: the bitmap
    stays in the image, nothing lists it, and QEMU's refusal still comes; it is a 409
    that says so, not libvirt's internal error as a 500."""
    vm = await snapshot_then_backup(manager, lab)
    name, snap, cp = vm["name"], vm["snap"], vm["taken"]["checkpoint"]
    try:
        await manager.backups.images.delete(vm["taken"]["id"])
        assert vm["dom"].listAllCheckpoints() == []
        with pytest.raises(Conflict) as refused:
            await manager.snapshots.revert("local", name, snap)
        msg = str(refused.value)
        assert "checkpoints are gone" in msg and "qemu-img bitmap --remove" in msg, msg
        assert "Device has active dirty bitmaps" in msg, msg  # libvirt's words kept
        # What it names clears the way.
        remove_bitmap(vm["path"], cp)
        assert (await manager.snapshots.revert("local", name, snap))["snapshot"] == snap
    finally:
        drop_snapshots(vm["dom"])


async def test_snapshot_of_a_stopped_vm_with_checkpoints_says_what_to_do(
    manager: Any, lab: dict[str, Any]
) -> None:
    """Issue 17's independent try, item 8: libvirt's raw "cannot perform block operations
    while checkpoint exists" reached the user."""
    vm = await snapshot_then_backup(manager, lab)
    name, dom, taken = vm["name"], vm["dom"], vm["taken"]
    try:
        with pytest.raises(Conflict) as refused:
            await manager.snapshots.create("local", name, "after-backup")
        msg = refused.value.message
        assert "block operations" not in msg, msg
        assert f"vm '{name}' is shut off and has backup checkpoints" in msg, msg
        assert f"checkpoint '{taken['checkpoint']}' of backup {taken['id']}" in msg, msg
        assert "kind='external' and memory=false" in msg, msg
        assert f"backup delete-image {name} ID, for ID in {taken['id']}" in msg, msg
        assert refused.value.field == "vm"
        assert "after-backup" not in [s.getName() for s in dom.listAllSnapshots()]
    finally:
        drop_snapshots(dom)
