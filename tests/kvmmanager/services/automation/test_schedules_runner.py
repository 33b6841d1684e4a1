"""The scheduler on the test driver with an injected clock: an occurrence runs at its
time, exactly once across a manager restart; missed runs follow the policy; an
interrupted run is never repeated; every run is in the audit log."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import libvirt
import pytest
from sqlalchemy import select
from tests.postgres_cluster import db_url  # noqa: F401 (fixture)

from kvmmanager.core.config import Settings
from kvmmanager.db.models import AuditEntry
from kvmmanager.services.automation.schedules import ScheduleSpec
from kvmmanager.services.vms.spec import VmSpec

T0 = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _cleanup() -> None:
    conn = libvirt.open("test:///default")
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith("kvmm-t-ops-"):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
    finally:
        conn.close()


@pytest.fixture
async def start_manager(settings: Settings, db_url: str) -> AsyncIterator[Any]:  # noqa: F811
    """Factory: a started Manager on the shared settings (same DB: a SQLite file or a
    PostgreSQL database, each test runs on both) whose scheduler uses `clock`; every
    manager it made is stopped afterwards."""
    from kvmmanager.services.manager import Manager

    settings.database.url = db_url

    made: list[Any] = []
    # test:///default keeps its VMs only while a connection is open: this one carries
    # them across the "restart" of the manager.
    keeper = libvirt.open("test:///default")

    async def start(clock: Clock, listener: Any = None) -> Any:
        m = Manager(settings)
        m.scheduler.clock = clock
        if listener is not None:
            # Before start: the first pass may run a missed occurrence at once.
            m.bus.add_listener(listener)
        await m.start()
        made.append(m)
        await m.registry.get("local").wait_connected(30)
        return m

    yield start
    for m in made:
        if m.started:
            await m.stop()
    _cleanup()
    keeper.close()


@pytest.fixture
def vm_name() -> str:
    return f"kvmm-t-ops-{uuid.uuid4().hex[:8]}"


async def _stop_all(*managers: Any) -> None:
    for m in managers:
        if m.started:
            await m.stop()


async def _wait_run(m: Any, schedule: str, count: int) -> list[dict[str, Any]]:
    """Poll (generous deadline) until the schedule has `count` finished runs."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        runs = m.schedules.runs(schedule)
        if len([r for r in runs if r["status"] != "running"]) >= count:
            return runs
        assert asyncio.get_running_loop().time() < deadline, runs
        await asyncio.sleep(0.02)


def _state(name: str) -> int:
    conn = libvirt.open("test:///default")
    try:
        return conn.lookupByName(name).state()[0]
    finally:
        conn.close()


async def test_runs_at_its_time_and_exactly_once_across_a_restart(start_manager, vm_name):
    clock = Clock(T0)
    m1 = await start_manager(clock)
    try:
        await m1.vms.create("local", VmSpec(name=vm_name, memory_mib=64))
        spec = ScheduleSpec(
            name="kvmm-t-ops-daily", action="start", vms=[{"host": "local", "vm": vm_name}],
            kind="daily", at_time="03:00",
        )  # fmt: skip
        created = m1.schedules.create(spec, created_by="admin")
        assert created["next_run_at"] == T0 + timedelta(hours=1)

        assert await m1.scheduler.tick() == []  # not yet due
        assert _state(vm_name) == libvirt.VIR_DOMAIN_SHUTOFF

        clock.now = T0 + timedelta(hours=1, seconds=5)
        m1.scheduler.wake()
        runs = await _wait_run(m1, "kvmm-t-ops-daily", 1)
        assert [r["status"] for r in runs] == ["ok"] and not runs[0]["missed"]
        assert runs[0]["due_at"] == T0 + timedelta(hours=1)
        assert _state(vm_name) == libvirt.VIR_DOMAIN_RUNNING
        assert m1.schedules.get("kvmm-t-ops-daily")["next_run_at"] == T0 + timedelta(
            days=1, hours=1
        )
    finally:
        await _stop_all(m1)

    # Restart at the same instant: nothing is due, nothing runs again.
    m2 = await start_manager(clock)
    try:
        assert await m2.scheduler.tick() == []
        await m2.scheduler.drain()
        assert len(m2.schedules.runs("kvmm-t-ops-daily")) == 1
        with m2.db() as s:
            audit = list(s.scalars(select(AuditEntry).where(AuditEntry.action == "schedules.run")))
        assert len(audit) == 1 and audit[0].result == "ok"
        assert audit[0].target == "schedules/kvmm-t-ops-daily"
        assert audit[0].params["by"] == "scheduler" and audit[0].username == "admin"
    finally:
        await _stop_all(m2)


@pytest.mark.parametrize("policy", ["run", "skip"])
async def test_missed_occurrences_follow_the_policy(start_manager, vm_name, policy):
    clock = Clock(T0)
    m1 = await start_manager(clock)
    try:
        await m1.vms.create("local", VmSpec(name=vm_name, memory_mib=64))
        spec = ScheduleSpec(
            name="kvmm-t-ops-missed", action="start", vms=[{"host": "local", "vm": vm_name}],
            kind="daily", at_time="03:00", missed_policy=policy,
        )  # fmt: skip
        m1.schedules.create(spec)
    finally:
        await _stop_all(m1)

    # The manager was down for three of the schedule's occurrences.
    clock.now = T0 + timedelta(days=2, hours=8)
    events: list[Any] = []
    m2 = await start_manager(
        clock, listener=lambda e: events.append(e) if e.kind == "schedule.run" else None
    )
    try:
        m2.scheduler.wake()
        runs = await _wait_run(m2, "kvmm-t-ops-missed", 1)
        assert len(runs) == 1 and runs[0]["missed"]
        assert "missed 3 occurrences" in runs[0]["message"], runs
        if policy == "run":
            assert runs[0]["status"] == "ok"
            assert _state(vm_name) == libvirt.VIR_DOMAIN_RUNNING
        else:
            assert runs[0]["status"] == "skipped"
            assert _state(vm_name) == libvirt.VIR_DOMAIN_SHUTOFF
        # It continues with the next future occurrence, no burst of catch-ups.
        nxt = m2.schedules.get("kvmm-t-ops-missed")["next_run_at"]
        assert nxt == T0 + timedelta(days=3, hours=1)
        # The event follows the run's record (a skipped one is complete at its claim).
        for _ in range(1500):  # up to 30 s
            if events:
                break
            await asyncio.sleep(0.02)
        assert [e.data["status"] for e in events] == [runs[0]["status"]]
    finally:
        await _stop_all(m2)


async def test_an_interrupted_run_is_not_repeated(start_manager, vm_name):
    clock = Clock(T0)
    m1 = await start_manager(clock)
    try:
        spec = ScheduleSpec(
            name="kvmm-t-ops-once", action="start", vms=[{"host": "local", "vm": vm_name}],
            kind="once", run_at=T0 + timedelta(minutes=5),
        )  # fmt: skip
        m1.schedules.create(spec)
        await m1.scheduler.aclose()  # no background loop: claim by hand, never execute
        clock.now = T0 + timedelta(minutes=5)
        claims = await asyncio.to_thread(m1.scheduler._claim_due, clock.now)
        assert len(claims) == 1
        # A second claim of the same occurrence (another tick, another manager) gets none.
        assert await asyncio.to_thread(m1.scheduler._claim_due, clock.now) == []
    finally:
        await _stop_all(m1)
    m2 = await start_manager(clock)
    try:
        assert await m2.scheduler.tick() == []
        runs = m2.schedules.runs("kvmm-t-ops-once")
        assert [r["status"] for r in runs] == ["interrupted"]
        assert m2.schedules.get("kvmm-t-ops-once")["next_run_at"] is None
    finally:
        await _stop_all(m2)


async def test_failures_are_recorded_as_failed(start_manager):
    clock = Clock(T0)
    m = await start_manager(clock)
    try:
        spec = ScheduleSpec(
            name="kvmm-t-ops-fail", action="reboot",
            vms=[{"host": "local", "vm": "kvmm-t-ops-nosuch"}], kind="cron", cron="*/10 * * * *",
        )  # fmt: skip
        m.schedules.create(spec)
        clock.now = T0 + timedelta(minutes=10)
        m.scheduler.wake()
        runs = await _wait_run(m, "kvmm-t-ops-fail", 1)
        assert runs[0]["status"] == "failed"
        assert runs[0]["result"]["results"][0]["error"]["code"] == "not_found"
        with m.db() as s:
            entry = s.scalar(select(AuditEntry).where(AuditEntry.action == "schedules.run"))
        assert entry.result == "error" and entry.error_code == "schedule_failed"
    finally:
        await _stop_all(m)
