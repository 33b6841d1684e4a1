"""Alert rules on synthetic samples and bus events (consecutive samples, severities,
scopes, firing/resolved history, audit, live events, signed webhooks), and fed by the
real metrics pipeline on the test driver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from kvmmanager.core.errors import InvalidInput
from kvmmanager.db.models import AuditEntry
from kvmmanager.services.alerts.service import RuleSpec
from kvmmanager.virt.events import Event

SECRET = "kvmm-t-ops-alert-secret"


@pytest.fixture
def receiver(outbound_loopback: Any) -> Iterator[dict[str, Any]]:
    """A webhook receiver on 127.0.0.1: an internal address, refused unless allow-listed
    (services/alerts/outbound.py), so the fixture allow-lists it explicitly."""
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"url": f"http://127.0.0.1:{server.server_port}/", "got": got}
    server.shutdown()
    server.server_close()


def vm(name: str, **values: Any) -> dict[str, Any]:
    return {"name": name, "tags": values.pop("tags", []), **values}


async def test_fires_after_n_samples_and_resolves_after_n_good_ones(manager, receiver):
    alerts = manager.alerts
    manager.webhooks.create("kvmm-t-ops-wh", receiver["url"], secret=SECRET)
    alerts.create_rule(
        RuleSpec(name="kvmm-t-ops-cpu", metric="cpu_pct", threshold=90, samples=3,
                 severity="critical", tag="prod"),
    )  # fmt: skip
    events: list[Event] = []
    manager.bus.add_listener(lambda e: events.append(e) if e.kind.startswith("alert.") else None)

    hot = {"u1": vm("web1", cpu_pct=95.0, tags=["prod"]), "u2": vm("dev1", cpu_pct=99.0)}
    alerts.evaluate("local", hot)
    alerts.evaluate("local", hot)
    assert alerts.list_alerts() == []
    alerts.evaluate("local", {**hot, "u1": vm("web1", cpu_pct=None, tags=["prod"])})  # unknown
    alerts.evaluate("local", hot)
    (a,) = alerts.list_alerts(state="firing")
    assert (a["subject"], a["subject_name"], a["severity"]) == ("u1", "web1", "critical")
    assert a["value"] == 95.0 and "cpu_pct 95 > 90" in a["message"]

    # Still hot: no second alert. Cool for 2 samples, hot again: the streak restarts.
    alerts.evaluate("local", hot)
    cool = {"u1": vm("web1", cpu_pct=10.0, tags=["prod"])}
    alerts.evaluate("local", cool)
    alerts.evaluate("local", cool)
    alerts.evaluate("local", hot)
    for _ in range(3):
        alerts.evaluate("local", cool)
    (a,) = alerts.list_alerts()
    assert a["state"] == "resolved" and a["resolved_at"] is not None and a["value"] == 10.0

    assert [e.kind for e in events] == ["alert.firing", "alert.resolved"]
    with manager.db() as s:
        audit = [e.action for e in s.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert audit == ["alerts.firing", "alerts.resolved"]
    await manager.webhooks.wait()
    kinds = sorted(json.loads(body)["event"] for _, body in receiver["got"])
    assert kinds == ["alert.firing", "alert.resolved"]
    headers, body = receiver["got"][0]
    mac = hmac.new(SECRET.encode(), headers["X-KVMM-Timestamp"].encode() + b"." + body,
                   hashlib.sha256).hexdigest()  # fmt: skip
    assert headers["X-KVMM-Signature"] == f"sha256={mac}"


async def test_event_rules_crash_host_and_schedule(manager):
    alerts = manager.alerts
    rules = [
        ("kvmm-t-ops-crash", "vm_crashed"),
        ("kvmm-t-ops-host", "host_unreachable"),
        ("kvmm-t-ops-sched", "schedule_failed"),
    ]
    for name, metric in rules:
        alerts.create_rule(RuleSpec(name=name, metric=metric, severity="critical"))
    alerts.on_event(Event("domain.lifecycle", "local", "u9",
                          {"name": "db1", "event": "stopped", "detail": "crashed"}))  # fmt: skip
    alerts.on_event(Event("domain.lifecycle", "local", "u9",
                          {"name": "db1", "event": "stopped", "detail": "shutdown"}))  # fmt: skip
    alerts.on_event(Event("host.status", "kvm2", "", {"status": "reconnecting", "reason": "eof"}))
    partial = {"name": "nightly", "status": "partial", "message": "1 of 2"}
    alerts.on_event(Event("schedule.run", "", "3", partial))
    firing = {a["metric"]: a for a in alerts.list_alerts(state="firing")}
    assert set(firing) == {"vm_crashed", "host_unreachable", "schedule_failed"}
    assert firing["vm_crashed"]["subject_name"] == "db1"
    assert "eof" in firing["host_unreachable"]["message"]

    alerts.on_event(Event("domain.lifecycle", "local", "u9",
                          {"name": "db1", "event": "started", "detail": "booted"}))  # fmt: skip
    alerts.on_event(Event("host.status", "kvm2", "", {"status": "connected"}))
    alerts.on_event(Event("schedule.run", "", "3", {"name": "nightly", "status": "ok"}))
    assert alerts.list_alerts(state="firing") == []
    assert len(alerts.list_alerts(state="resolved")) == 3


async def test_open_alerts_survive_a_restart(settings):
    from kvmmanager.services.manager import Manager

    m1 = Manager(settings)
    await m1.start()
    try:
        m1.alerts.create_rule(RuleSpec(name="kvmm-t-ops-mem", metric="mem_pct", threshold=80))
        m1.alerts.evaluate("local", {"u1": vm("web1", mem_pct=90.0)})
        assert len(m1.alerts.list_alerts(state="firing")) == 1
    finally:
        await m1.stop()
    m2 = Manager(settings)
    await m2.start()
    try:
        # Still firing: the same alert resolves, no duplicate fires.
        m2.alerts.evaluate("local", {"u1": vm("web1", mem_pct=91.0)})
        m2.alerts.evaluate("local", {"u1": vm("web1", mem_pct=20.0)})
        (a,) = m2.alerts.list_alerts()
        assert a["state"] == "resolved"
    finally:
        await m2.stop()


async def test_fed_by_the_metrics_pipeline(manager):
    """The follower wakes on each metrics cycle of the host and evaluates its samples."""
    await manager.registry.get("local").wait_connected(30)
    manager.alerts.create_rule(
        RuleSpec(name="kvmm-t-ops-any", metric="net_rx_bps", threshold=0, op=">=", samples=2,
                 host="local", vm="test"),
    )  # fmt: skip
    deadline = asyncio.get_running_loop().time() + 30
    # The metrics supervisor takes up a host on its next pass, which may follow the
    # connect by one interval.
    while "local" not in manager.metrics.hosts():
        assert asyncio.get_running_loop().time() < deadline, "metrics never took up 'local'"
        await asyncio.sleep(0.05)
    while not manager.alerts.list_alerts(state="firing"):
        await manager.metrics.collect_once("local")
        assert asyncio.get_running_loop().time() < deadline, "no alert from the pipeline"
        await asyncio.sleep(0.05)
    (a,) = manager.alerts.list_alerts(state="firing")
    assert a["subject_name"] == "test" and a["value"] >= 0


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"metric": "cpu_pct"}, "threshold"),
        ({"metric": "cpu_pct", "threshold": 1, "op": "=="}, "op"),
        ({"metric": "cpu_pct", "threshold": 1, "samples": 0}, "samples"),
        ({"metric": "load"}, "metric"),
        ({"metric": "vm_crashed", "threshold": 1}, "threshold"),
        ({"metric": "vm_crashed", "severity": "fatal"}, "severity"),
        ({"metric": "vm_crashed", "vm": "web1"}, "host"),
        ({"metric": "vm_crashed", "name": "Bad"}, "name"),
    ],
)
async def test_bad_rules_name_the_field(manager, kw, field):
    with pytest.raises(InvalidInput) as err:
        manager.alerts.create_rule(RuleSpec(**{"name": "kvmm-t-ops-r", **kw}))
    assert err.value.field == field


async def test_a_vm_removed_from_the_inventory_resolves_its_alerts(manager):
    """A VM found gone when its host is read again (after a reconnect: domain.removed, no
    lifecycle event) kept its alerts firing; a host's alert stays."""
    alerts = manager.alerts
    alerts.create_rule(RuleSpec(name="kvmm-t-ops-gone", metric="vm_crashed"))
    alerts.create_rule(RuleSpec(name="kvmm-t-ops-gone-host", metric="host_unreachable"))
    alerts.on_event(Event("domain.lifecycle", "local", "u7",
                          {"name": "db7", "event": "crashed", "detail": "panicked"}))  # fmt: skip
    alerts.on_event(Event("host.status", "local", "", {"status": "reconnecting"}))
    assert len(alerts.list_alerts(state="firing")) == 2
    alerts.on_event(Event("domain.removed", "local", "u7", {"name": "db7", "state": "shutoff"}))
    [left] = alerts.list_alerts(state="firing")
    assert left["metric"] == "host_unreachable"
    [gone] = alerts.list_alerts(state="resolved")
    assert (gone["subject_name"], gone["message"]) == ("db7", "vm deleted")
