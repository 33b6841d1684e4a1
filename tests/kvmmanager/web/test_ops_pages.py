"""Operations pages over HTTP (no browser): alerts, schedules, backups and batch actions
render for every role, their forms create / validate / change / delete through the real
services, viewers get no write controls and are refused anyway, and writes need CSRF."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient
from tests.testdriver_cleanup import purge

from kvmmanager.web.security import CSP

# Webhooks and e-mail here go to receivers on 127.0.0.1, an internal address refused by
# default (services/alerts/outbound.py): allow-listed explicitly.
pytestmark = pytest.mark.usefixtures("outbound_loopback")

OPS_PAGES = ["/alerts", "/schedules", "/backups"]


def hx(c: TestClient) -> dict[str, str]:
    return {"X-CSRF-Token": c.csrf, "HX-Request": "true"}  # type: ignore[attr-defined]


def field_error(html: str, field: str) -> str:
    m = re.search(rf'id="err-{re.escape(field)}"[^>]*>([^<]*)<', html)
    assert m, f"no error shown for {field}: {html[:500]}"
    return m.group(1)


@pytest.fixture
def operator(web_as: Any) -> Iterator[TestClient]:
    yield web_as("operator")


@pytest.fixture
def ops_vms(operator: TestClient) -> Iterator[list[str]]:
    """Two shut-off VMs with a 1 GiB disk each, made through the create form, owned by
    `operator`, tagged kvmm-t-ops."""
    names = ["kvmm-t-ops-a", "kvmm-t-ops-b"]
    purge("kvmm-t-ops-")
    for name in names:
        r = operator.post(
            "/vms/new",
            data={
                "host": "local",
                "name": name,
                "source": "blank",
                "disk_gib": "1",
                "disk_pool": "default-pool",
                "tags": "kvmm-t-ops",
            },
            headers=hx(operator),
        )
        assert r.status_code == 204, r.text
    yield names
    purge("kvmm-t-ops-")


def test_ops_pages_render_for_each_role_with_nav_entries(web_as: Any) -> None:
    for role in ("viewer", "operator", "admin"):
        c = web_as(role)
        for path in OPS_PAGES:
            r = c.get(path)
            assert r.status_code == 200, (role, path, r.text[:300])
            assert r.headers["content-security-policy"] == CSP
            assert f'href="{path}" aria-current="page"' in r.text
        home = c.get("/").text
        assert 'id="firing-count"' in home
        assert 'data-live-kind="alert.firing alert.resolved"' in home


# ---- alerts ---------------------------------------------------------------------------


def test_alert_rule_form_validates_by_field_then_creates_edits_and_deletes(
    operator: TestClient, web_app: Any
) -> None:
    c = operator
    base = {
        "metric": "cpu_pct",
        "op": ">",
        "samples": "3",
        "severity": "warning",
        "scope": "global",
        "enabled": "on",
    }
    r = c.post("/alerts/rules", data={**base, "name": "Bad Name", "threshold": "90"}, headers=hx(c))
    assert r.status_code == 422  # the form again, with the error by its field
    assert "lowercase" in field_error(r.text, "name")
    assert 'value="Bad Name"' in r.text  # what was typed stays
    r = c.post("/alerts/rules", data={**base, "name": "kvmm-t-cpu"}, headers=hx(c))
    assert "needs a threshold" in field_error(r.text, "threshold")
    r = c.post(
        "/alerts/rules", data={**base, "name": "kvmm-t-cpu", "threshold": "ninety"}, headers=hx(c)
    )
    assert "number" in field_error(r.text, "threshold")
    r = c.post(
        "/alerts/rules",
        data={**base, "name": "kvmm-t-cpu", "scope": "vm", "threshold": "90"},
        headers=hx(c),
    )
    assert "pick the VM" in field_error(r.text, "target")

    r = c.post(
        "/alerts/rules",
        data={
            **base,
            "name": "kvmm-t-cpu",
            "threshold": "90",
            "scope": "vm",
            "target": "local/test",
        },
        headers=hx(c),
    )
    assert r.status_code == 204, r.text
    # The toast travels to the page the answer redirects to, in the flash cookie.
    assert "kvmm-t-cpu created" in unquote(r.cookies["kvmm_flash"])
    rule = web_app.state.manager.alerts.get_rule("kvmm-t-cpu")
    assert (rule["host"], rule["vm"]) == ("local", "test")
    assert (rule["threshold"], rule["samples"]) == (90, 3)
    page = c.get("/alerts").text
    row = re.search(r'<tr id="rule-kvmm-t-cpu">.*?</tr>', page, re.S).group(0)
    assert "VM test on local" in row and "&gt; 90" in row and "3 samples" in row
    # A taken name is shown on the name field.
    r = c.post(
        "/alerts/rules", data={**base, "name": "kvmm-t-cpu", "threshold": "1"}, headers=hx(c)
    )
    assert "already exists" in field_error(r.text, "name")

    # Edit: the form comes prefilled, saving keeps the id.
    edit = c.get("/alerts", params={"edit": "kvmm-t-cpu"}).text
    assert 'hx-post="/alerts/rules/kvmm-t-cpu"' in edit and 'value="90"' in edit
    r = c.post(
        "/alerts/rules/kvmm-t-cpu",
        data={
            **base,
            "name": "kvmm-t-cpu",
            "threshold": "75",
            "severity": "critical",
            "scope": "tag",
            "tag": "web",
        },
        headers=hx(c),
    )
    assert r.status_code == 204, r.text
    after = web_app.state.manager.alerts.get_rule("kvmm-t-cpu")
    assert after["id"] == rule["id"]
    assert (after["threshold"], after["severity"], after["tag"], after["vm"]) == (
        75,
        "critical",
        "web",
        None,
    )
    # An event rule takes no threshold; disabling and deleting work.
    r = c.post(
        "/alerts/rules",
        data={
            "name": "kvmm-t-crash",
            "metric": "vm_crashed",
            "severity": "critical",
            "scope": "global",
            "enabled": "on",
        },
        headers=hx(c),
    )
    assert r.status_code == 204, r.text
    assert c.post("/alerts/rules/kvmm-t-crash/disable", headers=hx(c)).status_code == 204
    assert web_app.state.manager.alerts.get_rule("kvmm-t-crash")["enabled"] is False
    for name in ("kvmm-t-cpu", "kvmm-t-crash"):
        assert c.post(f"/alerts/rules/{name}/delete", headers=hx(c)).status_code == 204
    assert web_app.state.manager.alerts.list_rules() == []
    assert c.post("/alerts/rules/kvmm-t-cpu", data=base, headers=hx(c)).status_code == 404


def test_firing_alerts_and_history_and_the_nav_badge(operator: TestClient, web_app: Any) -> None:
    m = web_app.state.manager
    from kvmmanager.services.alerts.service import RuleSpec

    m.alerts.create_rule(RuleSpec(name="kvmm-t-hot", metric="cpu_pct", threshold=50))
    try:
        uuid = m.inventory.domain("local", "test").uuid
        m.alerts.evaluate("local", {uuid: {"name": "test", "tags": [], "cpu_pct": 97.0}})
        page = operator.get("/alerts").text
        firing = re.search(r'id="firing-table".*?</table>', page, re.S).group(0)
        assert "kvmm-t-hot" in firing and "cpu_pct 97" in firing
        badge = operator.get("/alerts/badge").text
        assert re.search(r'id="firing-count"[^>]*>.*?1</span>', badge, re.S)
        assert "hidden" not in badge.split(">")[0]
        m.alerts.evaluate("local", {uuid: {"name": "test", "tags": [], "cpu_pct": 3.0}})
        live = operator.get("/alerts/live").text
        assert "Nothing is firing" in live
        history = re.search(r'id="alert-history".*?</table>', live, re.S).group(0)
        assert "resolved" in history and "back to 3" in history
        assert "hidden" in operator.get("/alerts/badge").text.split(">")[0]
    finally:
        m.alerts.delete_rule("kvmm-t-hot")


def test_viewer_sees_no_alert_write_controls_and_is_refused(web_as: Any, web_app: Any) -> None:
    from kvmmanager.services.alerts.service import RuleSpec

    m = web_app.state.manager
    m.alerts.create_rule(RuleSpec(name="kvmm-t-ro", metric="vm_crashed"))
    try:
        viewer = web_as("viewer")
        page = viewer.get("/alerts").text
        assert "kvmm-t-ro" in page
        assert 'id="rule-form"' not in page and "/alerts/rules/kvmm-t-ro/delete" not in page
        assert 'id="webhooks"' not in page
        r = viewer.post("/alerts/rules/kvmm-t-ro/delete", headers=hx(viewer))
        assert r.status_code == 403
        operator = web_as("operator")
        assert 'id="webhooks"' not in operator.get("/alerts").text  # webhooks: admins only
        r = operator.post(
            "/alerts/webhooks", data={"name": "x", "url": "http://h/"}, headers=hx(operator)
        )
        assert r.status_code == 403
        # CSRF: an operator's write without the header is refused.
        assert operator.post("/alerts/rules/kvmm-t-ro/delete").status_code == 403
        assert m.alerts.get_rule("kvmm-t-ro")
    finally:
        m.alerts.delete_rule("kvmm-t-ro")


def test_admin_adds_tests_and_deletes_a_webhook(web_as: Any, web_app: Any) -> None:
    admin = web_as("admin")
    assert 'id="webhooks"' in admin.get("/alerts").text
    r = admin.post(
        "/alerts/webhooks", data={"name": "kvmm-t-hook", "url": "ftp://x/"}, headers=hx(admin)
    )
    assert "http" in field_error(r.text, "url")
    r = admin.post(
        "/alerts/webhooks",
        data={"name": "kvmm-t-hook", "url": "http://127.0.0.1:9/h", "min_severity": "critical"},
        headers=hx(admin),
    )
    assert r.status_code == 200
    secret = re.search(r'id="webhook-secret">([^<]+)<', r.text).group(1)
    assert len(secret) >= 16
    m = web_app.state.manager
    assert m.webhooks.get("kvmm-t-hook")["min_severity"] == "critical"
    r = admin.post("/alerts/webhooks/kvmm-t-hook/ping", headers=hx(admin))
    assert r.status_code == 200 and "Test delivery" in r.headers["hx-trigger"]
    deliveries = admin.get("/alerts/webhooks/kvmm-t-hook/deliveries").text
    assert "ping" in deliveries
    r = admin.post("/alerts/webhooks/kvmm-t-hook/delete", headers=hx(admin))
    assert r.status_code == 200 and "kvmm-t-hook" not in r.text.split("Add a webhook")[0]
    assert m.webhooks.list() == []


# ---- schedules ------------------------------------------------------------------------


def test_schedule_form_validates_by_field_then_creates_edits_and_deletes(
    operator: TestClient, web_app: Any
) -> None:
    c = operator
    m = web_app.state.manager
    base = {
        "name": "kvmm-t-nightly",
        "action": "snapshot",
        "vms": "local/test",
        "timezone": "Europe/Berlin",
        "missed_policy": "skip",
        "enabled": "on",
    }
    r = c.post("/schedules", data={**base, "kind": "cron", "cron": "61 * * * *"}, headers=hx(c))
    assert r.status_code == 422
    assert "cron" in field_error(r.text, "cron")
    assert 'value="61 * * * *"' in r.text
    r = c.post("/schedules", data={**base, "kind": "daily", "at_time": "25:00"}, headers=hx(c))
    assert "HH:MM" in field_error(r.text, "at_time")
    r = c.post("/schedules", data={**base, "kind": "weekly", "at_time": "02:30"}, headers=hx(c))
    assert "at least one" in field_error(r.text, "weekdays")
    r = c.post(
        "/schedules",
        data={**base, "kind": "daily", "at_time": "02:30", "timezone": "Mars/Olympus"},
        headers=hx(c),
    )
    assert "time zone" in field_error(r.text, "timezone")
    r = c.post(
        "/schedules", data={**base, "vms": [], "kind": "daily", "at_time": "02:30"}, headers=hx(c)
    )
    assert "at least one vm or a tag" in field_error(r.text, "vms")
    r = c.post(
        "/schedules",
        data={
            **base,
            "action": "backup",
            "policy": "kvmm-t-none",
            "kind": "daily",
            "at_time": "02:30",
        },
        headers=hx(c),
    )
    assert "kvmm-t-none" in field_error(r.text, "policy")

    # Weekly on Monday and Friday at 02:30 Berlin time.
    r = c.post(
        "/schedules",
        data={**base, "kind": "weekly", "at_time": "02:30", "weekdays": ["0", "4"]},
        headers=hx(c),
    )
    assert r.status_code == 204, r.text
    s = m.schedules.get("kvmm-t-nightly")
    assert (s["weekdays"], s["timezone"], s["missed_policy"]) == ([0, 4], "Europe/Berlin", "skip")
    page = c.get("/schedules").text
    row = re.search(r'<tr id="schedule-kvmm-t-nightly">.*?</tr>', page, re.S).group(0)
    assert "weekly on Mon, Fri at 02:30" in row
    # The next run is shown in the schedule's zone (CET or CEST), at 02:30 local.
    assert re.search(r"\d{4}-\d\d-\d\d 02:30 CES?T", row), row
    assert "never" in row  # no run yet
    runs = c.get("/schedules/kvmm-t-nightly/runs").text
    assert "It has not run yet" in runs

    # Edit to a cron schedule; disable; delete.
    edit = c.get("/schedules", params={"edit": "kvmm-t-nightly"}).text
    assert 'hx-post="/schedules/kvmm-t-nightly"' in edit
    r = c.post(
        "/schedules/kvmm-t-nightly",
        data={**base, "kind": "cron", "cron": "15 3 * * *"},
        headers=hx(c),
    )
    assert r.status_code == 204, r.text
    assert m.schedules.get("kvmm-t-nightly")["cron"] == "15 3 * * *"
    assert c.post("/schedules/kvmm-t-nightly/disable", headers=hx(c)).status_code == 204
    after = m.schedules.get("kvmm-t-nightly")
    assert after["enabled"] is False and after["next_run_at"] is None
    assert c.post("/schedules/kvmm-t-nightly/delete", headers=hx(c)).status_code == 204
    assert m.schedules.list() == []


def test_schedule_once_in_the_past_is_refused_on_its_field(operator: TestClient) -> None:
    r = operator.post(
        "/schedules",
        data={
            "name": "kvmm-t-once",
            "action": "start",
            "vms": "local/test",
            "kind": "once",
            "run_at": "2001-01-01T10:00",
            "timezone": "UTC",
        },
        headers=hx(operator),
    )
    assert "past" in field_error(r.text, "run_at")


def test_viewer_sees_schedules_without_write_controls(web_as: Any, web_app: Any) -> None:
    from kvmmanager.services.automation.schedules import ScheduleSpec

    m = web_app.state.manager
    m.schedules.create(
        ScheduleSpec(name="kvmm-t-ro", action="start", tag="web", kind="daily", at_time="06:00")
    )
    try:
        viewer = web_as("viewer")
        page = viewer.get("/schedules").text
        assert "kvmm-t-ro" in page and "History" in page
        assert 'id="schedule-form"' not in page and "/schedules/kvmm-t-ro/delete" not in page
        assert viewer.post("/schedules/kvmm-t-ro/delete", headers=hx(viewer)).status_code == 403
        operator = web_as("operator")
        assert operator.post("/schedules/kvmm-t-ro/delete").status_code == 403  # no CSRF
        assert m.schedules.get("kvmm-t-ro")
    finally:
        m.schedules.delete("kvmm-t-ro")


# ---- backups --------------------------------------------------------------------------


def test_backup_policy_form_validates_creates_runs_shows_and_deletes(
    operator: TestClient, web_app: Any, ops_vms: list[str]
) -> None:
    c = operator
    m = web_app.state.manager
    base = {
        "name": "kvmm-t-bk",
        "vms": f"local/{ops_vms[0]}",
        "keep_last": "2",
        "keep_daily": "0",
        "keep_weekly": "0",
        "timezone": "UTC",
        "quiesce": "never",
    }
    r = c.post("/backups", data={**base, "name": "Has.Dot"}, headers=hx(c))
    assert r.status_code == 422
    assert "lowercase" in field_error(r.text, "name")
    r = c.post("/backups", data={**base, "keep_last": "0"}, headers=hx(c))
    assert "at least one" in field_error(r.text, "keep_last")
    r = c.post("/backups", data={**base, "keep_daily": "many"}, headers=hx(c))
    assert "whole number" in field_error(r.text, "keep_daily")
    r = c.post("/backups", data={**base, "vms": []}, headers=hx(c))
    assert "at least one vm" in field_error(r.text, "vms")
    r = c.post("/backups", data=base, headers=hx(c))
    assert r.status_code == 204, r.text
    try:
        row = re.search(r'<tr id="policy-kvmm-t-bk">.*?</tr>', c.get("/backups").text, re.S)
        assert row and "last 2" in row.group(0) and "never" in row.group(0)
        # Run now three times: each VM result is shown, retention keeps the newest two.
        for _ in range(3):
            r = c.post("/backups/kvmm-t-bk/run", headers=hx(c))
            assert r.status_code == 200, r.text
        assert "1 of 1 VMs" in r.headers["hx-trigger"] or "1 of 1" in r.text
        results = re.search(r'id="backup-run-results".*?</table>', r.text, re.S).group(0)
        assert ops_vms[0] in results and "result-ok" in results and "kvmm-t-bk-" in results
        assert 'id="policy-table" hx-swap-oob="true"' in r.text  # the last-run column updates
        kept = c.get("/backups/kvmm-t-bk/snapshots").text
        names = re.findall(r'class="mono">(kvmm-t-bk-[0-9-]+)<', kept)
        assert len(names) == 2, kept
        assert "Restore" in kept
        # Edit: retention 1; the next run prunes to one.
        r = c.post("/backups/kvmm-t-bk", data={**base, "keep_last": "1"}, headers=hx(c))
        assert r.status_code == 204, r.text
        assert m.backups.get("kvmm-t-bk")["keep_last"] == 1
        r = c.post("/backups/kvmm-t-bk/run", headers=hx(c))
        kept = c.get("/backups/kvmm-t-bk/snapshots").text
        names = re.findall(r'class="mono">(kvmm-t-bk-[0-9-]+)<', kept)
        assert len(names) == 1
        # Restore to it (the route is what the confirmed button posts).
        r = c.post(f"/backups/kvmm-t-bk/restore/local/{ops_vms[0]}/{names[0]}", headers=hx(c))
        assert r.status_code == 200 and "restored" in r.headers["hx-trigger"]
    finally:
        # The VM's snapshots go with it (ops_vms); the policy goes here.
        assert c.post("/backups/kvmm-t-bk/delete", headers=hx(c)).status_code == 204
    assert m.backups.list() == []


def test_viewer_sees_backups_without_write_controls(web_as: Any, web_app: Any) -> None:
    from kvmmanager.services.backups.policies import PolicySpec

    m = web_app.state.manager
    m.backups.create(PolicySpec(name="kvmm-t-ro", tag="web"))
    try:
        viewer = web_as("viewer")
        page = viewer.get("/backups").text
        assert "kvmm-t-ro" in page and "Snapshots" in page
        assert 'id="policy-form"' not in page and "/backups/kvmm-t-ro/run" not in page
        assert viewer.post("/backups/kvmm-t-ro/run", headers=hx(viewer)).status_code == 403
        operator = web_as("operator")
        assert operator.post("/backups/kvmm-t-ro/delete").status_code == 403  # no CSRF
    finally:
        m.backups.delete("kvmm-t-ro")


# ---- batch actions --------------------------------------------------------------------


def _selected(web_app: Any, names: list[str]) -> list[str]:
    inv = web_app.state.manager.inventory
    return [f"local/{inv.domain('local', n).uuid}" for n in names]


def _results(html: str) -> dict[str, str]:
    """VM name -> its result row's text."""
    rows = re.findall(r'<tr data-batch-vm="([^"]+)">(.*?)</tr>', html, re.S)
    return {name: re.sub(r"<[^>]+>", " ", row) for name, row in rows}


def test_vm_list_has_row_checkboxes_select_all_and_an_action_bar(
    operator: TestClient, web_as: Any
) -> None:
    page = operator.get("/vms").text
    assert 'data-select-all="selected"' in page and 'name="selected"' in page
    buttons = dict(re.findall(r"hx-vals='\{\"action\": \"(\w+)\"\}'([^>]*)>", page))
    assert set(buttons) == {"start", "shutdown", "reboot", "destroy", "snapshot", "delete"}
    assert "data-confirm=" in buttons["destroy"] and "data-confirm=" in buttons["delete"]
    assert "data-confirm=" not in buttons["start"]
    viewer = web_as("viewer").get("/vms").text
    assert 'name="selected"' not in viewer and "/vms/batch" not in viewer


def test_batch_start_then_snapshot_then_delete_with_per_vm_results(
    operator: TestClient, web_app: Any, ops_vms: list[str]
) -> None:
    c = operator
    m = web_app.state.manager
    sel = _selected(web_app, ops_vms)
    r = c.post("/vms/batch", data={"action": "start", "selected": sel}, headers=hx(c))
    assert r.status_code == 200, r.text
    assert "Start: 2 of 2 VMs done" in r.headers["hx-trigger"]
    res = _results(r.text)
    assert set(res) == set(ops_vms) and all("running" in v for v in res.values())
    # The inventory follows libvirt's lifecycle events, a moment after the answer.
    deadline = time.monotonic() + 30
    while not all(m.inventory.domain("local", n).state == "running" for n in ops_vms):
        assert time.monotonic() < deadline, "the inventory never saw both VMs running"
        time.sleep(0.05)
    # Starting again: each VM fails on its own, with libvirt's reason.
    r = c.post("/vms/batch", data={"action": "start", "selected": sel}, headers=hx(c))
    assert "2 failed" in r.headers["hx-trigger"]
    assert all("failed" in v for v in _results(r.text).values())
    # By tag, plus one unknown VM that fails alone.
    r = c.post(
        "/vms/batch",
        data={"action": "snapshot", "tag": "kvmm-t-ops", "selected": ["local/kvmm-t-ops-none"]},
        headers=hx(c),
    )
    res = _results(r.text)
    assert "failed" in res["kvmm-t-ops-none"] and "not found" in res["kvmm-t-ops-none"]
    assert all("snapshot" in res[n] and "ok" in res[n] for n in ops_vms)
    r = c.post("/vms/batch", data={"action": "destroy", "selected": sel}, headers=hx(c))
    assert "2 of 2" in r.headers["hx-trigger"]
    r = c.post(
        "/vms/batch",
        data={"action": "delete", "selected": sel, "remove_volumes": "true"},
        headers=hx(c),
    )
    assert "Delete: 2 of 2 VMs done" in r.headers["hx-trigger"], r.text
    deadline = time.monotonic() + 30
    while [d for d in m.inventory.domains("local") if d.name in ops_vms]:
        assert time.monotonic() < deadline, "the inventory still lists deleted VMs"
        time.sleep(0.05)


def test_batch_refuses_bad_input_other_owners_vms_viewers_and_missing_csrf(
    web_as: Any, web_app: Any, ops_vms: list[str]
) -> None:
    sel = _selected(web_app, ops_vms)
    other = web_as("operator")  # ops_vms belong to the `operator` fixture's user
    r = other.post("/vms/batch", data={"action": "start", "selected": sel}, headers=hx(other))
    assert r.status_code == 200
    assert all("belongs to" in v for v in _results(r.text).values())
    assert all(
        web_app.state.manager.inventory.domain("local", n).state == "shutoff" for n in ops_vms
    )
    r = other.post("/vms/batch", data={"action": "explode", "selected": sel}, headers=hx(other))
    assert r.status_code == 422 and "action must be one of" in r.headers["hx-trigger"]
    r = other.post("/vms/batch", data={"action": "start"}, headers=hx(other))
    assert r.status_code == 422 and "at least one vm" in r.headers["hx-trigger"]
    viewer = web_as("viewer")
    r = viewer.post("/vms/batch", data={"action": "start", "selected": sel}, headers=hx(viewer))
    assert r.status_code == 403
    assert other.post("/vms/batch", data={"action": "start", "selected": sel}).status_code == 403
    admin = web_as("admin")  # admins may act on anyone's VMs
    r = admin.post("/vms/batch", data={"action": "start", "selected": sel}, headers=hx(admin))
    assert "2 of 2" in r.headers["hx-trigger"], r.text


# ---- export / import ------------------------------------------------------------------


def _follow_job(c: TestClient, html: str) -> str:
    """Poll a transfer job fragment (as its hx-trigger does) until the job has ended."""
    for _ in range(600):
        m = re.search(r'hx-get="(/transfer/jobs/[^"]+)"', html)
        if m is None:
            return html
        time.sleep(0.1)
        html = c.get(m.group(1)).text
    raise AssertionError("the job did not end")


def test_transfer_page_xml_download_and_import(
    operator: TestClient, web_as: Any, web_app: Any, ops_vms: list[str]
) -> None:
    c = operator
    m = web_app.state.manager
    page = c.get("/transfer")
    assert page.status_code == 200 and 'id="import-bundle"' in page.text
    assert 'data-upload-post="/api/hosts/{host}/imports/bundle"' in page.text
    viewer = web_as("viewer")
    assert viewer.get("/transfer").status_code == 403
    assert viewer.get("/transfer/xml", params={"vm": "local/test"}).status_code == 403

    r = c.get("/transfer/xml", params={"vm": f"local/{ops_vms[0]}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    assert f'filename="{ops_vms[0]}.xml"' in r.headers["content-disposition"]
    xml = r.text
    assert f"<name>{ops_vms[0]}</name>" in xml

    r = c.post("/transfer/import-xml", data={"host": "local", "xml": " "}, headers=hx(c))
    assert r.status_code == 422 and "paste" in field_error(r.text, "xml")
    r = c.post("/transfer/import-xml", data={"host": "local", "xml": "<domain"}, headers=hx(c))
    assert r.status_code == 422 and field_error(r.text, "xml")
    # Same name as the original: refused on the name field, as the service says.
    r = c.post(
        "/transfer/import-xml",
        data={"host": "local", "xml": xml, "name": ops_vms[1]},
        headers=hx(c),
    )
    assert r.status_code == 422, r.text
    # A new identity next to the source would share its writable disk: refused at the
    # XML field, saying how to get a copy (issue 17).
    r = c.post(
        "/transfer/import-xml",
        data={"host": "local", "xml": xml, "name": "kvmm-t-ops-imported", "new_identity": "true"},
        headers=hx(c),
    )
    assert r.status_code == 422, r.text
    assert "share" in field_error(r.text, "xml") and "clone" in field_error(r.text, "xml")
    diskless = re.sub(r"<disk\b.*?</disk>", "", xml, flags=re.S)
    r = c.post(
        "/transfer/import-xml",
        data={
            "host": "local",
            "xml": diskless,
            "name": "kvmm-t-ops-imported",
            "new_identity": "true",
        },
        headers=hx(c),
    )
    assert r.status_code == 204, r.text
    assert r.headers["hx-redirect"] == "/vms/local/kvmm-t-ops-imported"
    imported = m.inventory.domain("local", "kvmm-t-ops-imported")
    assert imported.uuid != m.inventory.domain("local", ops_vms[0]).uuid

    # The test driver cannot stream volumes: a failed export job says so.
    r = c.post("/transfer/export", data={"vm": f"local/{ops_vms[0]}"}, headers=hx(c))
    assert r.status_code == 200, r.text
    final = _follow_job(c, r.text)
    assert "job-failed" in final and "cannot download volumes" in final


def test_transfer_bundle_export_download_and_upload_import(
    operator: TestClient, web_app: Any, ops_vms: list[str]
) -> None:
    """A VM without disks makes a bundle even on the test driver: export job with its
    progress, download, then the upload the import form's script makes, followed to the
    imported VM."""
    c = operator
    m = web_app.state.manager
    r = c.post(
        "/vms/new",
        data={"host": "local", "name": "kvmm-t-ops-nodisk", "source": "blank", "disk_gib": "0"},
        headers=hx(c),
    )
    assert r.status_code == 204, r.text
    r = c.post("/transfer/export", data={"vm": "local/kvmm-t-ops-nodisk"}, headers=hx(c))
    assert r.status_code == 200 and "Export of local/kvmm-t-ops-nodisk" in r.text
    final = _follow_job(c, r.text)
    assert "job-done" in final, final
    link = re.search(r'href="(/api/exports/[^"]+)"', final).group(1)
    bundle = c.get(link)
    assert bundle.status_code == 200 and bundle.content[:2] == b"\x1f\x8b"  # gzip
    bundle_id = link.rsplit("/", 1)[1]
    r = c.post(
        "/api/hosts/local/imports/bundle",
        params={"pool": "default-pool", "name": "kvmm-t-ops-fromb", "new_identity": "true"},
        content=bundle.content,
        headers={"X-CSRF-Token": c.csrf, "Content-Type": "application/gzip"},
    )
    assert r.status_code == 202, r.text
    final = _follow_job(c, c.get(f"/transfer/jobs/{r.json()['job_id']}").text)
    assert "job-done" in final and "Imported" in final and "kvmm-t-ops-fromb" in final, final
    assert m.inventory.domain("local", "kvmm-t-ops-fromb")
    r = c.post(f"/transfer/bundles/{bundle_id}/delete", headers=hx(c))
    assert r.status_code == 200 and "removed" in r.text
    assert c.get(link).status_code == 404
