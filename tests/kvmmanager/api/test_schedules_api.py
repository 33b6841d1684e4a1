"""Schedule routes (CRUD, enable/disable, runs, roles, errors naming the field) and
`kvm-manager schedule` against a live server; a run driven by the injected clock shows
up in the API's run list and the audit log."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

DAILY = {
    "name": "kvmm-t-ops-nightly",
    "action": "snapshot",
    "tag": "kvmm-t-ops",
    "kind": "daily",
    "at_time": "02:30",
    "timezone": "Europe/Berlin",
}


def _wait(cond: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := cond():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_crud_and_roles(client, client_as):
    r = client.post("/api/schedules", json=DAILY)
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["created_by"] == "admin" and s["enabled"] and s["next_run_at"]
    local = datetime.fromisoformat(s["next_run_at"]).astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/Berlin")
    )
    assert (local.hour, local.minute) == (2, 30)
    assert client.post("/api/schedules", json=DAILY).status_code == 409

    viewer = client_as("viewer")
    assert [x["name"] for x in viewer.get("/api/schedules").json()] == [DAILY["name"]]
    assert viewer.get(f"/api/schedules/{s['id']}").json()["name"] == DAILY["name"]
    assert viewer.post(f"/api/schedules/{s['id']}/disable").status_code == 403

    r = client.post(f"/api/schedules/{DAILY['name']}/disable")
    assert r.status_code == 200 and r.json()["next_run_at"] is None
    r = client.post(f"/api/schedules/{DAILY['name']}/enable")
    assert r.json()["enabled"] and r.json()["next_run_at"]

    r = client.put(
        f"/api/schedules/{DAILY['name']}",
        json={**DAILY, "kind": "weekly", "weekdays": [5, 6], "at_time": "08:00"},
    )
    assert r.status_code == 200 and r.json()["weekdays"] == [5, 6]
    assert client.get(f"/api/schedules/{DAILY['name']}/runs").json() == []

    assert client.delete(f"/api/schedules/{DAILY['name']}").status_code == 204
    assert client.get(f"/api/schedules/{DAILY['name']}").status_code == 404


def test_bad_input_names_the_field(client):
    for body, field in [
        ({**DAILY, "at_time": "2:30"}, "at_time"),
        ({**DAILY, "timezone": "Nowhere/City"}, "timezone"),
        (
            {**DAILY, "kind": "once", "at_time": None, "run_at": "2000-01-01T00:00:00Z"},
            "run_at",
        ),
    ]:
        r = client.post("/api/schedules", json=body)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["field"] == field
    r = client.post("/api/schedules", json={**DAILY, "action": "explode"})
    assert r.status_code == 422
    assert client.get("/api/schedules/kvmm-t-ops-none/runs").status_code == 404
    r = client.get(f"/api/schedules/{DAILY['name']}/runs?limit=0")
    assert r.status_code == 422 and r.json()["error"]["field"] == "limit"


def test_a_run_appears_in_runs_and_audit(client):
    manager = client.app.state.manager
    start = datetime(2026, 5, 1, 0, 0, tzinfo=UTC)
    clock = {"now": start}
    manager.scheduler.clock = lambda: clock["now"]
    body = {
        "name": "kvmm-t-ops-cron",
        "action": "start",
        "vms": [{"host": "local", "vm": "kvmm-t-ops-missing"}],
        "kind": "cron",
        "cron": "0 * * * *",
    }
    assert client.post("/api/schedules", json=body).status_code == 201
    clock["now"] = start + timedelta(hours=1, seconds=1)
    manager.scheduler.wake()
    runs = _wait(
        lambda: [
            r
            for r in client.get("/api/schedules/kvmm-t-ops-cron/runs").json()
            if r["status"] != "running"
        ],
        "the scheduled run",
    )
    assert runs[0]["status"] == "failed" and "0 of 1" in runs[0]["message"]
    audit = client.get("/api/audit", params={"action": "schedules.run"}).json()
    items = audit["items"] if isinstance(audit, dict) else audit
    assert items[0]["target"] == "schedules/kvmm-t-ops-cron" and items[0]["result"] == "error"


def test_cli_schedule(cli):
    r = cli("--json", "schedule", "add", "kvmm-t-ops-cli", "shutdown", "web1", "kvm2/db1",
            "--kind", "weekly", "--weekdays", "mon,fri", "--at", "22:15", "--tz", "UTC",
            "--missed", "skip")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["weekdays"] == [0, 4] and s["missed_policy"] == "skip"
    assert s["vms"] == [{"host": "local", "vm": "web1"}, {"host": "kvm2", "vm": "db1"}]
    r = cli("schedule", "list")
    assert r.exit_code == 0 and "weekly mon,fri 22:15" in r.stdout
    assert cli("schedule", "disable", "kvmm-t-ops-cli").exit_code == 0
    r = cli("--json", "schedule", "show", "kvmm-t-ops-cli")
    assert json.loads(r.stdout)["enabled"] is False
    r = cli("schedule", "add", "x", "start", "--tag", "t", "--kind", "weekly", "--at", "1:00",
            "--weekdays", "funday")  # fmt: skip
    assert r.exit_code == 2 and "--weekdays" in r.stderr
    assert cli("schedule", "remove", "kvmm-t-ops-cli").exit_code == 0
    assert cli("schedule", "show", "kvmm-t-ops-cli").exit_code == 4
