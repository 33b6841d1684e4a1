"""Batch actions on the test driver: per-VM results, one failure never stops the rest."""

from __future__ import annotations

import uuid

import libvirt
import pytest

from kvmmanager.core.errors import InvalidInput
from kvmmanager.services.automation.batch import Target
from kvmmanager.services.vms.spec import DiskSpec, VmSpec


@pytest.fixture
async def three_vms(manager):
    """Three shut-off VMs with a disk, tagged `kvmm-t-ops-batch`; removed afterwards."""
    await manager.registry.get("local").wait_connected(30)
    names = [f"kvmm-t-ops-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    uuids = []
    for name in names:
        spec = VmSpec(name=name, memory_mib=64, disks=[DiskSpec(pool="default-pool", size_gib=1)])
        res = await manager.vms.create("local", spec)
        uuids.append(res["vm"].uuid)
        await manager.vms.set_tags("local", name, ["kvmm-t-ops-batch"])
        await manager.vms.refresh("local", res["vm"].uuid)
    yield names
    conn = libvirt.open("test:///default")
    try:
        for u in uuids:
            try:
                dom = conn.lookupByUUIDString(u)
            except libvirt.libvirtError:
                continue
            if dom.isActive():
                dom.destroy()
            for snap in dom.listAllSnapshots():
                snap.delete()
            dom.undefine()
        for vol in conn.storagePoolLookupByName("default-pool").listAllVolumes():
            if vol.name().startswith("kvmm-t-ops-"):
                vol.delete(0)
    finally:
        conn.close()


async def test_start_by_tag_then_one_failure_does_not_stop_the_others(manager, three_vms):
    res = await manager.batch.run("start", tag="kvmm-t-ops-batch", concurrency=2)
    assert (res["total"], res["succeeded"], res["failed"]) == (3, 3, 0)
    assert {r["vm"] for r in res["results"]} == set(three_vms)
    assert all(r["state"] == "running" for r in res["results"])

    # One VM is off again: `destroy` on all three fails for that one only.
    await manager.vms.action("local", three_vms[1], "destroy")
    targets = [Target("local", n) for n in three_vms] + [Target("local", "kvmm-t-ops-nosuch")]
    res = await manager.batch.run("destroy", targets, concurrency=1)
    by_vm = {r["vm"]: r for r in res["results"]}
    assert (res["total"], res["succeeded"], res["failed"]) == (4, 2, 2)
    assert by_vm[three_vms[0]]["ok"] and by_vm[three_vms[0]]["state"] == "shutoff"
    assert by_vm[three_vms[2]]["ok"] and by_vm[three_vms[2]]["state"] == "shutoff"
    assert by_vm[three_vms[1]]["error"]["code"] == "conflict"
    assert "is not running" in by_vm[three_vms[1]]["message"]
    assert by_vm["kvmm-t-ops-nosuch"]["error"]["code"] == "not_found"


async def test_delete_reports_progress_and_removes_the_vms(manager, three_vms):
    seen: list[tuple[int, int]] = []
    res = await manager.batch.run(
        "delete",
        [Target("local", n) for n in three_vms],
        progress=lambda done, total, msg: seen.append((done, total)),
    )
    assert res["succeeded"] == 3
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)
    names = {d.name() for d in manager.registry.get("local").conn.listAllDomains()}
    assert not names & set(three_vms)


async def test_same_vm_by_name_and_uuid_runs_once(manager, three_vms):
    info = manager.inventory.domain("local", three_vms[0])
    res = await manager.batch.run(
        "start", [Target("local", three_vms[0]), Target("local", info.uuid)]
    )
    assert res["total"] == 1 and res["succeeded"] == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"action": "explode", "tag": "x"}, "action"),
        ({"action": "start"}, "vms"),
        ({"action": "start", "tag": "x", "concurrency": 0}, "concurrency"),
        ({"action": "start", "tag": "x", "mode": "hard"}, "mode"),
        ({"action": "start", "tag": "Bad Tag!"}, "tag"),
    ],
)
async def test_bad_requests_name_the_field(manager, kwargs, field):
    with pytest.raises(InvalidInput) as err:
        await manager.batch.run(**kwargs)
    assert err.value.field == field


async def test_snapshot_every_tagged_vm(manager, three_vms):
    res = await manager.batch.run("snapshot", tag="kvmm-t-ops-batch", snapshot_name="kvmm-t-s1")
    assert res["succeeded"] == 3, res
    assert {r["details"]["snapshot"] for r in res["results"]} == {"kvmm-t-s1"}
    listed = await manager.snapshots.list("local", three_vms[0])
    assert [s["name"] for s in listed["snapshots"]] == ["kvmm-t-s1"]
    # Taken again under the same name: every VM reports the clash, none is skipped.
    res = await manager.batch.run("snapshot", tag="kvmm-t-ops-batch", snapshot_name="kvmm-t-s1")
    assert res["failed"] == 3 and {r["error"]["code"] for r in res["results"]} == {"conflict"}
