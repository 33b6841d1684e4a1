"""Operations pages over HTTP (no browser): alerts, schedules, backups and batch actions
render for every role, their forms create / validate / change / delete through the real
services, viewers get no write controls and are refused anyway, and writes need CSRF."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kvmmanager.web.security import CSP

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
    base = {"metric": "cpu_pct", "op": ">", "samples": "3", "severity": "warning",
            "scope": "global", "enabled": "on"}  # fmt: skip
    r = c.post("/alerts/rules", data={**base, "name": "Bad Name", "threshold": "90"}, headers=hx(c))
    assert r.status_code == 200
    assert "lowercase" in field_error(r.text, "name")
    assert 'value="Bad Name"' in r.text  # what was typed stays
    r = c.post("/alerts/rules", data={**base, "name": "kvmm-t-cpu"}, headers=hx(c))
    assert "needs a threshold" in field_error(r.text, "threshold")
    r = c.post("/alerts/rules", data={**base, "name": "kvmm-t-cpu", "threshold": "ninety"},
               headers=hx(c))  # fmt: skip
    assert "number" in field_error(r.text, "threshold")
    r = c.post("/alerts/rules", data={**base, "name": "kvmm-t-cpu", "scope": "vm",
               "threshold": "90"}, headers=hx(c))  # fmt: skip
    assert "pick the VM" in field_error(r.text, "target")

    r = c.post("/alerts/rules", data={**base, "name": "kvmm-t-cpu", "threshold": "90",
               "scope": "vm", "target": "local/test"}, headers=hx(c))  # fmt: skip
    assert r.status_code == 204, r.text
    assert "kvmm-t-cpu created" in r.headers["hx-trigger"]
    rule = web_app.state.manager.alerts.get_rule("kvmm-t-cpu")
    assert (rule["host"], rule["vm"]) == ("local", "test")
    assert (rule["threshold"], rule["samples"]) == (90, 3)
    page = c.get("/alerts").text
    row = re.search(r'<tr id="rule-kvmm-t-cpu">.*?</tr>', page, re.S).group(0)
    assert "VM test on local" in row and "&gt; 90" in row and "3 samples" in row
    # A taken name is shown on the name field.
    r = c.post("/alerts/rules", data={**base, "name": "kvmm-t-cpu", "threshold": "1"},
               headers=hx(c))  # fmt: skip
    assert "already exists" in field_error(r.text, "name")

    # Edit: the form comes prefilled, saving keeps the id.
    edit = c.get("/alerts", params={"edit": "kvmm-t-cpu"}).text
    assert 'hx-post="/alerts/rules/kvmm-t-cpu"' in edit and 'value="90"' in edit
    r = c.post("/alerts/rules/kvmm-t-cpu", data={**base, "name": "kvmm-t-cpu", "threshold": "75",
               "severity": "critical", "scope": "tag", "tag": "web"}, headers=hx(c))  # fmt: skip
    assert r.status_code == 204, r.text
    after = web_app.state.manager.alerts.get_rule("kvmm-t-cpu")
    assert after["id"] == rule["id"]
    assert (after["threshold"], after["severity"], after["tag"], after["vm"]) == (
        75, "critical", "web", None)  # fmt: skip
    # An event rule takes no threshold; disabling and deleting work.
    r = c.post("/alerts/rules", data={"name": "kvmm-t-crash", "metric": "vm_crashed",
               "severity": "critical", "scope": "global", "enabled": "on"},
               headers=hx(c))  # fmt: skip
    assert r.status_code == 204, r.text
    assert c.post("/alerts/rules/kvmm-t-crash/disable", headers=hx(c)).status_code == 204
    assert web_app.state.manager.alerts.get_rule("kvmm-t-crash")["enabled"] is False
    for name in ("kvmm-t-cpu", "kvmm-t-crash"):
        assert c.post(f"/alerts/rules/{name}/delete", headers=hx(c)).status_code == 204
    assert web_app.state.manager.alerts.list_rules() == []
    assert c.post("/alerts/rules/kvmm-t-cpu", data=base, headers=hx(c)).status_code == 404


def test_firing_alerts_and_history_and_the_nav_badge(operator: TestClient, web_app: Any) -> None:
    m = web_app.state.manager
    from kvmmanager.services.alerts import RuleSpec

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
    from kvmmanager.services.alerts import RuleSpec

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
        r = operator.post("/alerts/webhooks", data={"name": "x", "url": "http://h/"},
                          headers=hx(operator))  # fmt: skip
        assert r.status_code == 403
        # CSRF: an operator's write without the header is refused.
        assert operator.post("/alerts/rules/kvmm-t-ro/delete").status_code == 403
        assert m.alerts.get_rule("kvmm-t-ro")
    finally:
        m.alerts.delete_rule("kvmm-t-ro")


def test_admin_adds_tests_and_deletes_a_webhook(web_as: Any, web_app: Any) -> None:
    admin = web_as("admin")
    assert 'id="webhooks"' in admin.get("/alerts").text
    r = admin.post("/alerts/webhooks", data={"name": "kvmm-t-hook", "url": "ftp://x/"},
                   headers=hx(admin))  # fmt: skip
    assert "http" in field_error(r.text, "url")
    r = admin.post("/alerts/webhooks", data={"name": "kvmm-t-hook", "url": "http://127.0.0.1:9/h",
                   "min_severity": "critical"}, headers=hx(admin))  # fmt: skip
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
