"""Job events of one instance reach the bus (and so the SSE stream) of another instance on
the same PostgreSQL database, through LISTEN/NOTIFY (services/fleet/events.py); an
instance never gets its own events twice; an event too large for a NOTIFY is sent
without its long values. The process-level proof (two real servers, a browser session
and an SSE stream) is tests/reliability/test_fleet_active_active.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from tests.postgres_cluster import shared_cluster

from kvmmanager.core.config import Settings
from kvmmanager.services.alerts.service import RuleSpec
from kvmmanager.services.fleet import events as fleet_events
from kvmmanager.services.manager import Manager
from kvmmanager.virt.events import RESYNC, Event

WAIT = 30.0


async def test_a_job_on_one_instance_is_seen_on_the_others_bus_once(settings: Settings) -> None:
    settings.database.url = shared_cluster().new_database()
    a, b = Manager(settings), Manager(settings)
    await a.start()
    try:
        await b.start()
        on_a: list[Event] = []
        on_b: list[Event] = []
        b_done = asyncio.Event()

        def seen_on_b(e: Event) -> None:
            if e.kind.startswith("job."):
                on_b.append(e)
                if e.kind == "job.done":
                    b_done.set()

        a.bus.add_listener(lambda e: on_a.append(e) if e.kind.startswith("job.") else None)
        b.bus.add_listener(seen_on_b)

        def work(p: Any) -> dict[str, int]:
            p(1, 2, "kvmm-t-fleet half")
            return {"ok": 1}

        job_id = a.jobs.start("kvmm-t-fleet.relay", "x", work, "admin")
        assert (await a.jobs.wait(job_id)).state == "done"
        async with asyncio.timeout(WAIT):
            await b_done.wait()
        mine_b = [(e.kind, e.subject, e.data.get("state")) for e in on_b]
        mine_a = [(e.kind, e.subject, e.data.get("state")) for e in on_a]
        # B saw what A published, in order, once each, as A's.
        assert mine_b == mine_a
        assert {e.origin for e in on_b} == {a.instances.id} and {e.origin for e in on_a} == {""}
        assert mine_b[-1] == ("job.done", job_id, "done")
        assert any(e.data.get("message") == "kvmm-t-fleet half" for e in on_b)
        # B's relay did not send them back: A has each of its events once.
        await asyncio.sleep(0.5)
        assert [(e.kind, e.subject, e.data.get("state")) for e in on_a] == mine_a
    finally:
        await b.stop()
        await a.stop()


async def _until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not check():  # noqa: ASYNC110 - polling state another instance changes
            await asyncio.sleep(0.05)


async def test_a_host_added_or_removed_through_one_instance_is_followed_by_the_others(
    settings: Settings,
) -> None:
    """Issue 16 D1: a host added through A was unknown to B until B restarted (404 on
    /api/hosts/<new>/vms through B), and a host removed through B stayed on A."""
    settings.database.url = shared_cluster().new_database()
    a, b = Manager(settings), Manager(settings)
    await a.start()
    try:
        await b.start()
        name = "kvmm-t-fleet-host2"
        await a.hosts.add(name, "test:///default")
        await _until(lambda: name in b.registry)
        await b.registry.get(name).wait_connected(WAIT)
        assert (await b.hosts.get(name))["name"] == name
        assert b.inventory.domains(name)  # the test driver's VM, listed through B
        await b.hosts.remove(name)
        await _until(lambda: name not in a.registry)
        assert [h["name"] for h in await a.hosts.list()] == ["local"]
        assert [h["name"] for h in await b.hosts.list()] == ["local"]
    finally:
        await b.stop()
        await a.stop()


def _schedule_run(name: str, status: str) -> Event:
    """What the lease holder's scheduler publishes after a run."""
    data = {"name": name, "status": status, "message": f"kvmm-t-fleet run {status}"}
    return Event("schedule.run", host="", subject="1", data=data)


async def test_a_rule_changed_through_a_standby_is_evaluated_by_the_lease_holder(
    settings: Settings,
) -> None:
    """Issue 16 D2: a rule created, changed or deleted through an instance that does not
    hold the lease was not evaluated by the holder (it reloaded only its own changes)."""
    settings.database.url = shared_cluster().new_database()
    a, b = Manager(settings), Manager(settings)
    await a.start()
    try:
        await b.start()
        await _until(lambda: a.lease.held or b.lease.held)
        holder, standby = (a, b) if a.lease.held else (b, a)

        def alerts(state: str) -> set[str]:
            return {x["rule_name"] for x in holder.alerts.list_alerts(state=state)}

        def fired(rule: str) -> Callable[[], bool]:
            def check() -> bool:
                # Again until the holder has the rule: a run's event is evaluated once.
                holder.bus.publish(_schedule_run("kvmm-t-fleet-s1", "failed"))
                return rule in alerts("firing")

            return check

        first = RuleSpec(name="kvmm-t-fleet-first", metric="schedule_failed")
        await asyncio.to_thread(standby.alerts.create_rule, first)
        await _until(fired(first.name))
        # Disabled through the standby (as the web form's synchronous route does, from a
        # worker thread), then a second rule: once the holder fires the second, it reads
        # the rules as they are after both changes.
        await asyncio.to_thread(standby.alerts.set_enabled, first.name, False)
        second = RuleSpec(name="kvmm-t-fleet-second", metric="schedule_failed")
        await asyncio.to_thread(standby.alerts.create_rule, second)
        await _until(fired(second.name))
        # The schedule runs well again: the second rule's alert resolves; the disabled
        # rule is no longer evaluated, its alert stays as it was.
        holder.bus.publish(_schedule_run("kvmm-t-fleet-s1", "ok"))
        await _until(lambda: second.name in alerts("resolved"))
        assert alerts("firing") == {first.name}
    finally:
        await b.stop()
        await a.stop()


def test_an_event_too_large_for_notify_keeps_its_short_values() -> None:
    event = Event("job.done", host="h", subject="j1", data={"state": "done", "result": "x" * 9000})
    payload = fleet_events.encode("me", event)
    assert len(payload.encode()) <= fleet_events.PAYLOAD_MAX
    back = fleet_events.decode(payload)
    assert back is not None
    assert back.origin == "me" and back.kind == "job.done" and back.subject == "j1"
    assert back.data == {"state": "done", "truncated": True}
    assert fleet_events.decode("{not json") is None


async def test_a_stream_is_told_to_resync_after_its_instance_stopped_listening(
    settings: Settings,
) -> None:
    """Events other instances sent while this one's LISTEN connection was gone are lost
    to it: once it listens again, every subscriber (each SSE stream) gets one `resync`
    and re-reads what it mirrors from the REST API, instead of silently missing them."""
    url = shared_cluster().new_database()
    settings.database.url = url
    m = Manager(settings)
    await m.start()
    try:
        assert m.fleet_events.listening.is_set()
        with m.bus.subscribe() as sub:
            database = m.engine.url.database
            # The server ends the LISTEN connection (as a database restart or a network
            # cut would); the relay reconnects by itself.
            ended = await asyncio.to_thread(_terminate_listener, database)
            assert ended == 1
            async with asyncio.timeout(WAIT):
                event = await sub.get()
                while event.kind != RESYNC:
                    event = await sub.get()
            assert event.data["reason"] == "fleet_events_gap"
            assert m.fleet_events.listening.is_set()
    finally:
        await m.stop()


def _terminate_listener(database: str | None) -> int:
    with shared_cluster().admin.connect() as conn:
        return len(
            list(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :db AND query LIKE 'LISTEN %'"
                    ),
                    {"db": database},
                )
            )
        )
