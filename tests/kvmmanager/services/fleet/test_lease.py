"""The singleton lease, on SQLite (one file) and on PostgreSQL (the run's throwaway
cluster): of two manager instances on one database only the lease holder runs a due
schedule, exactly once; when the holder stops, or its lease expires, the other takes over
and runs the next occurrence exactly once. Short lease timings come from settings."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update
from tests.postgres_cluster import db_url  # noqa: F401 (fixture)

from kvmmanager.core.config import Settings
from kvmmanager.db.fleet_models import Lease
from kvmmanager.db.models import utcnow
from kvmmanager.services.automation.schedules import ScheduleSpec
from kvmmanager.services.manager import Manager

T0 = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)
SCHEDULE = "kvmm-t-lease-every10"
WAIT = 30.0  # generous bound of every wait (the machine is shared)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _short_lease(settings: Settings, url: str) -> None:
    settings.database.url = url
    # Short, yet long enough that a loop stalled by the other instance's start (a shared,
    # loaded machine) does not lose the lease.
    settings.fleet.heartbeat_seconds = 0.2
    settings.fleet.lease_seconds = 2.0


async def _until(what: Any, message: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not what():
        assert asyncio.get_running_loop().time() < deadline, message
        await asyncio.sleep(0.02)


class Instance:
    """A started Manager with its own record of the schedule runs it published."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.m = Manager(settings)
        self.m.scheduler.clock = clock
        self.fired: list[str] = []
        # Runs of this instance: on PostgreSQL the other's reach this bus too (origin set).
        self.m.bus.add_listener(
            lambda e: (
                self.fired.append(e.data["due_at"])
                if e.kind == "schedule.run" and not e.origin
                else None
            )
        )

    async def start(self) -> Instance:
        await self.m.start()
        return self

    async def stop(self) -> None:
        if self.m.started:
            await self.m.stop()


def _every_ten_minutes() -> ScheduleSpec:
    # Its VM does not exist: the run fails fast; what counts here is how often it runs.
    target = {"host": "local", "vm": "kvmm-t-lease-nosuch"}
    return ScheduleSpec(
        name=SCHEDULE, action="start", vms=[target], kind="cron", cron="*/10 * * * *"
    )


def _finished(m: Manager) -> list[dict[str, Any]]:
    return [r for r in m.schedules.runs(SCHEDULE) if r["status"] != "running"]


async def _roles(a: Instance, b: Instance) -> tuple[Instance, Instance]:
    """(holder, other): exactly one of the two holds the lease (the first started, unless
    its beats stalled for a whole lease)."""
    await _until(lambda: a.m.lease.held != b.m.lease.held, "no single lease holder")
    return (a, b) if a.m.lease.held else (b, a)


async def _fire(clock: Clock, at: datetime, *instances: Instance) -> None:
    clock.now = at
    for i in instances:
        i.m.scheduler.wake()


async def test_one_instance_runs_a_due_schedule_then_the_other_takes_over(
    settings: Settings,
    db_url: str,  # noqa: F811
) -> None:
    _short_lease(settings, db_url)
    clock = Clock(T0)
    a = await Instance(settings, clock).start()
    b = None
    try:
        b = await Instance(settings, clock).start()
        holder, other = await _roles(a, b)
        listed = {i.id: i.lease_holder for i in other.m.instances.list()}
        assert listed == {holder.m.instances.id: True, other.m.instances.id: False}

        a.m.schedules.create(_every_ten_minutes())
        await _fire(clock, T0 + timedelta(minutes=10, seconds=1), a, b)
        await _until(lambda: len(_finished(a.m)) >= 1, "the due schedule never ran")
        # The other instance has nothing to claim: not the holder.
        assert await other.m.scheduler.tick() == []
        await _until(lambda: holder.fired, "the holder published no schedule.run")
        assert holder.fired == [(T0 + timedelta(minutes=10)).isoformat()] and other.fired == []

        # The holder stops (releases): the other takes over at its next beat.
        await holder.stop()
        await _until(lambda: other.m.lease.held, "the other instance never took the lease")
        assert [i.lease_holder for i in other.m.instances.list()] == [True]
        await _fire(clock, T0 + timedelta(minutes=20, seconds=1), other)
        await _until(lambda: len(_finished(other.m)) >= 2, "the next occurrence never ran")
        await _until(lambda: other.fired, "the new holder published no schedule.run")
        assert other.fired == [(T0 + timedelta(minutes=20)).isoformat()]
        assert holder.fired == [(T0 + timedelta(minutes=10)).isoformat()]
        dues = sorted(r["due_at"] for r in other.m.schedules.runs(SCHEDULE))
        assert dues == [T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)]
    finally:
        await a.stop()
        if b is not None:
            await b.stop()


async def test_an_expired_lease_is_taken_over_and_nothing_fires_twice(
    settings: Settings,
    db_url: str,  # noqa: F811
) -> None:
    _short_lease(settings, db_url)
    clock = Clock(T0)
    a = await Instance(settings, clock).start()
    b = None
    try:
        b = await Instance(settings, clock).start()
        old, new = await _roles(a, b)
        first_token = old.m.lease.token
        a.m.schedules.create(_every_ten_minutes())
        # The holder's heartbeat dies (as a hung or killed process's would); the process
        # itself keeps running and keeps being woken below.
        beat = old.m.instances._task
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)
        # An occurrence falls due during the handover; both are woken again and again.
        clock.now = T0 + timedelta(minutes=10, seconds=1)

        def handed_over() -> bool:
            for i in (a, b):
                i.m.scheduler.wake()
            return bool(new.m.lease.held) and not old.m.lease.held

        await _until(handed_over, "the expired lease was never taken over")
        assert new.m.lease.token == first_token + 1
        await _until(lambda: _finished(a.m) and (a.fired or b.fired), "the due run never ran")
        # Run exactly once, by whichever held the lease when it fell due.
        ten = (T0 + timedelta(minutes=10)).isoformat()
        assert sorted(a.fired + b.fired) == [ten]
        # The next occurrence: only the new holder runs it, once.
        before = list(old.fired)
        for minute in (20, 30):
            await _fire(clock, T0 + timedelta(minutes=minute, seconds=1), a, b)
            due = (T0 + timedelta(minutes=minute)).isoformat()
            await _until(lambda due=due: due in new.fired, f"the {due} run never ran")
        assert old.fired == before
        assert sorted(a.fired + b.fired)[-2:] == [
            (T0 + timedelta(minutes=20)).isoformat(),
            (T0 + timedelta(minutes=30)).isoformat(),
        ]
        assert len(a.m.schedules.runs(SCHEDULE)) == 3
        assert await old.m.scheduler.tick() == []
    finally:
        await a.stop()
        if b is not None:
            await b.stop()


def test_of_racing_instances_exactly_one_takes_an_expired_lease(
    settings: Settings,
    db_url: str,  # noqa: F811
) -> None:
    """The compare-and-set itself, from threads released together: each round, one
    winner; the token grows by one whenever the holder changes."""
    settings.database.url = db_url
    managers = [Manager(settings) for _ in range(3)]
    managers[0].prepare_database()
    token, holder = 0, None
    try:
        for _ in range(10):
            barrier = threading.Barrier(len(managers))
            won: list[int | None] = [None] * len(managers)

            def race(i: int, barrier: threading.Barrier, won: list[int | None]) -> None:
                barrier.wait()
                won[i] = managers[i].lease.try_acquire()

            threads = [
                threading.Thread(target=race, args=(i, barrier, won)) for i in range(len(managers))
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(WAIT)
            winners = [i for i, w in enumerate(won) if w is not None]
            assert len(winners) == 1, won
            winner = winners[0]
            token = token if winner == holder else token + 1
            holder = winner
            assert won[winner] == token
            # A live lease is not taken by the others; its holder renews it.
            for i, m in enumerate(managers):
                assert m.lease.try_acquire() == (token if i == winner else None)
            info = managers[0].lease.info()
            assert info is not None and info.live
            assert info.holder == managers[winner].instances.id
            with managers[0].db.begin() as s:
                s.execute(update(Lease).values(expires_at=utcnow() - timedelta(seconds=1)))
    finally:
        for m in managers:
            m.engine.dispose()
