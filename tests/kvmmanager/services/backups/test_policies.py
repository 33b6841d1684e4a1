"""Backup policies: the retention arithmetic (last N, daily, weekly, time zones), and runs
on the test driver (snapshot per VM, prune to the retention, other snapshots untouched,
one failure not stopping the rest), also started by a schedule."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import libvirt
import pytest

from kvmmanager.core.errors import InvalidInput, NotFound
from kvmmanager.services.automation.schedules import ScheduleSpec
from kvmmanager.services.backups.policies import PolicySpec
from kvmmanager.services.backups.retention import retained
from kvmmanager.services.vms.spec import DiskSpec, VmSpec

DAY = 86400.0
BASE = datetime(2026, 5, 4, 12, 0, tzinfo=UTC).timestamp()  # a Monday


def test_keep_last_daily_and_weekly():
    # Two snapshots a day for 20 days (the 12:00 and 18:00 ones).
    snaps = [(f"p-{d:02d}-{h}", BASE + d * DAY + (h - 12) * 3600) for d in range(20)
             for h in (12, 18)]  # fmt: skip
    assert retained(snaps, 3, 0, 0, "UTC") == {"p-19-18", "p-19-12", "p-18-18"}
    daily = retained(snaps, 0, 3, 0, "UTC")
    assert daily == {"p-19-18", "p-18-18", "p-17-18"}
    weekly = retained(snaps, 0, 0, 3, "UTC")
    # Days 19 (Sat), 13 (Sun of the week before), 6 (Sun of the first week).
    assert weekly == {"p-19-18", "p-13-18", "p-06-18"}
    assert retained(snaps, 1, 2, 0, "UTC") == {"p-19-18", "p-18-18"}


def test_days_are_counted_in_the_policy_time_zone():
    # Monday 23:30 and 14:00 UTC: one day in UTC; Tuesday 08:30 and Monday 23:00 in Tokyo.
    snaps = [("a", BASE + 11.5 * 3600), ("b", BASE + 2 * 3600)]
    assert retained(snaps, 0, 5, 0, "UTC") == {"a"}
    assert retained(snaps, 0, 5, 0, "Asia/Tokyo") == {"a", "b"}


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"name": "Bad.Name", "tag": "x"}, "name"),
        ({"name": "p"}, "vms"),
        ({"name": "p", "tag": "x", "keep_last": 0}, "keep_last"),
        ({"name": "p", "tag": "x", "keep_daily": -1}, "keep_daily"),
        ({"name": "p", "tag": "x", "quiesce": "maybe"}, "quiesce"),
        ({"name": "p", "tag": "x", "timezone": "Nowhere/X"}, "timezone"),
    ],
)
async def test_bad_policies_name_the_field(manager, kw, field):
    with pytest.raises(InvalidInput) as err:
        manager.backups.create(PolicySpec(**kw))
    assert err.value.field == field


@pytest.fixture
async def vms(manager):
    await manager.registry.get("local").wait_connected(30)
    names = [f"kvmm-t-ops-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for n in names:
        spec = VmSpec(name=n, memory_mib=64, tags=["kvmm-t-ops-bk"],
                      disks=[DiskSpec(pool="default-pool", size_gib=1)])  # fmt: skip
        await manager.vms.create("local", spec)
    yield names
    conn = libvirt.open("test:///default")
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith("kvmm-t-ops-"):
                for snap in dom.listAllSnapshots():
                    snap.delete()
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        for vol in conn.storagePoolLookupByName("default-pool").listAllVolumes():
            if vol.name().startswith("kvmm-t-ops-"):
                vol.delete(0)
    finally:
        conn.close()


async def _names(manager, vm: str) -> list[str]:
    return [s["name"] for s in (await manager.snapshots.list("local", vm))["snapshots"]]


async def test_runs_snapshot_and_prune_to_keep_last(manager, vms):
    bk = manager.backups
    bk.create(PolicySpec(name="kvmm-t-ops-p", tag="kvmm-t-ops-bk", keep_last=2), "admin")
    await manager.snapshots.create("local", vms[0], name="manual-keep-me")
    t = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)
    for i in range(3):
        res = await bk.run("kvmm-t-ops-p", now=t + timedelta(hours=i))
        assert res["status"] == "ok" and res["total"] == 2, res
    assert res["snapshot"] == "kvmm-t-ops-p-20260501-040000"
    assert {r["vm"] for r in res["results"]} == set(vms)
    assert res["results"][0]["pruned"] == ["kvmm-t-ops-p-20260501-020000"]
    assert sorted(await _names(manager, vms[0])) == [
        "kvmm-t-ops-p-20260501-030000",
        "kvmm-t-ops-p-20260501-040000",
        "manual-keep-me",
    ]
    got = bk.get("kvmm-t-ops-p")
    assert got["last_status"] == "ok" and got["last_run_at"] == t + timedelta(hours=2)


async def test_one_vm_failing_does_not_stop_the_others(manager, vms):
    bk = manager.backups
    bk.create(PolicySpec(name="kvmm-t-ops-q", vms=[{"host": "local", "vm": "kvmm-t-ops-none"},
              {"host": "local", "vm": vms[1]}]))  # fmt: skip
    res = await bk.run("kvmm-t-ops-q")
    assert (res["status"], res["succeeded"], res["failed"]) == ("partial", 1, 1)
    bad = next(r for r in res["results"] if not r["ok"])
    assert bad["error"]["code"] == "not_found"


async def test_a_schedule_runs_the_policy(manager, vms):
    manager.backups.create(PolicySpec(name="kvmm-t-ops-s", vms=[{"host": "local", "vm": vms[0]}]))
    start = datetime(2026, 5, 1, 0, 0, tzinfo=UTC)
    manager.scheduler.clock = lambda: start
    await manager.scheduler.aclose()  # drive it by hand
    with pytest.raises(InvalidInput) as err:
        manager.schedules.create(
            ScheduleSpec(
                name="kvmm-t-ops-bs",
                action="backup",
                kind="daily",
                at_time="01:00",
                policy="kvmm-t-ops-s",
                tag="x",
            )
        )
    assert err.value.field == "vms"
    manager.schedules.create(
        ScheduleSpec(
            name="kvmm-t-ops-bs",
            action="backup",
            kind="daily",
            at_time="01:00",
            policy="kvmm-t-ops-s",
        )
    )
    manager.scheduler.clock = lambda: start + timedelta(hours=1)
    assert len(await manager.scheduler.tick()) == 1
    await manager.scheduler.drain()
    (run,) = manager.schedules.runs("kvmm-t-ops-bs")
    assert run["status"] == "ok", run
    assert await _names(manager, vms[0]) == ["kvmm-t-ops-s-20260501-010000"]


async def test_restore_needs_confirmation_and_a_backup_of_the_policy(manager, vms):
    bk = manager.backups
    bk.create(PolicySpec(name="kvmm-t-ops-r", vms=[{"host": "local", "vm": vms[0]}]))
    await manager.snapshots.create("local", vms[0], name="manual")
    res = await bk.run("kvmm-t-ops-r", now=datetime(2026, 5, 1, 2, 0, tzinfo=UTC))
    name = res["snapshot"]
    assert [s["name"] for s in await bk.backups_of("kvmm-t-ops-r", "local", vms[0])] == [name]
    with pytest.raises(InvalidInput) as err:
        await bk.restore("kvmm-t-ops-r", "local", vms[0], name, confirm=False)
    assert err.value.field == "confirm"
    with pytest.raises(NotFound) as nf:
        await bk.restore("kvmm-t-ops-r", "local", vms[0], "manual", confirm=True)
    assert nf.value.field == "snapshot"
    await manager.vms.action("local", vms[0], "start")
    out = await bk.restore("kvmm-t-ops-r", "local", vms[0], name, confirm=True)
    # The backup was taken of the shut-off VM: restoring it leaves the VM off again.
    assert out["snapshot"] == name and out["running"] is False
