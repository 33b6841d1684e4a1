"""The operations pages in a real browser (Debian's Chromium through Playwright) against
a live server on libvirt's test driver: an alert rule made in the form is listed and its
alert shows up live, batch start from the VM list, and a schedule form's field error."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.live_api import api_client
from tests.kvmmanager.web.shots import shot

pytestmark = pytest.mark.browser


@pytest.fixture
def two_vms(live_server: Any) -> Iterator[list[str]]:
    """Two shut-off VMs made through the REST API (owned by its admin), deleted after."""
    names = ["kvmm-t-opsb-a", "kvmm-t-opsb-b"]
    with api_client(live_server) as c:
        for name in names:
            r = c.post("/api/hosts/local/vms", json={"name": name, "memory_mib": 64})
            assert r.status_code == 201, r.text
    yield names
    with api_client(live_server) as c:
        for name in names:
            c.post(f"/api/hosts/local/vms/{name}/actions/destroy")
            c.delete(f"/api/hosts/local/vms/{name}")


def test_alert_rule_created_in_the_form_is_listed_and_fires_live(
    browser_login: Any, live_server: Any
) -> None:
    page = browser_login("operator")
    page.goto("/alerts")
    page.wait_for_function("() => document.documentElement.dataset.live === 'open'")
    expect(page.locator("#firing-count")).to_be_hidden()
    form = page.locator("form#rule-form")
    form.locator("input[name=name]").fill("kvmm-t-live")
    form.locator("select[name=metric]").select_option("net_rx_bps")
    form.locator("select[name=op]").select_option(">=")
    form.locator("input[name=threshold]").fill("0")
    form.locator("input[name=samples]").fill("3")
    form.locator("input[name=scope][value=vm]").check()
    # The VM picker appears only for the "one VM" scope.
    expect(form.locator("select[name=target]")).to_be_visible()
    form.locator("select[name=target]").select_option("local/test")
    form.locator("button[type=submit]").click()
    row = page.locator("tr#rule-kvmm-t-live")
    try:
        expect(row).to_contain_text("VM test on local")
        expect(row).to_contain_text(">= 0")
        # net_rx_bps >= 0 holds for every sample of the metrics pipeline (the test driver
        # reports no CPU time); after 3 of them (seconds after the page loaded) the alert
        # is pushed to the open page (alert.firing on /api/events), no reload.
        page.wait_for_function("() => document.documentElement.dataset.live === 'open'")
        page.evaluate("() => { window.kvmmSamePage = true; }")
        firing = page.locator("#firing-table")
        expect(firing).to_contain_text("kvmm-t-live", timeout=30_000)
        assert page.evaluate("() => window.kvmmSamePage === true"), "the page was reloaded"
        expect(page.locator("#firing-count")).to_be_visible()
        expect(page.locator("#firing-count")).to_contain_text("1")
    finally:
        page.once("dialog", lambda d: d.accept())
        row.locator("button", has_text="Delete").click()
        expect(page.locator("tr#rule-kvmm-t-live")).to_have_count(0)
    assert live_server.manager.alerts.list_rules() == []


def test_batch_start_of_two_vms_then_both_rows_say_running(
    browser_login: Any, two_vms: list[str]
) -> None:
    page = browser_login("admin")
    page.goto("/vms")
    page.wait_for_function("() => document.documentElement.dataset.live === 'open'")
    rows = [page.locator("tr", has_text=name) for name in two_vms]
    for row in rows:
        expect(row.locator("[data-state]")).to_have_text("off")
    for name in two_vms:
        page.get_by_label(f"Select {name}", exact=True).check()
    expect(page.locator("[data-selected-count]")).to_have_text("2")
    page.locator(".batch-bar button", has_text="Start").click()
    results = page.locator("#batch-results")
    expect(results).to_contain_text("Start: 2 of 2 VMs done")
    for name in two_vms:
        expect(results.locator(f'tr[data-batch-vm="{name}"]')).to_contain_text("ok")
    for row in rows:
        expect(row.locator("[data-state]")).to_have_text("running", timeout=15_000)
    # Select all ticks every row; a destructive action asks first, and "no" sends nothing.
    page.get_by_label("Select all VMs").check()
    assert page.locator("input[name=selected]:not(:checked)").count() == 0
    page.once("dialog", lambda d: d.dismiss())
    page.locator(".batch-bar button", has_text="Force off").click()
    expect(results).to_contain_text("Start: 2 of 2")  # unchanged: nothing was sent
    for row in rows:
        expect(row.locator("[data-state]")).to_have_text("running")


def test_ticks_survive_a_live_refresh_of_the_list(
    browser_login: Any, live_server: Any, two_vms: list[str]
) -> None:
    page = browser_login("admin")
    page.goto("/vms")
    page.wait_for_function("() => document.documentElement.dataset.live === 'open'")
    box = page.get_by_label(f"Select {two_vms[0]}", exact=True)
    box.check()
    expect(page.locator("[data-selected-count]")).to_have_text("1")
    # Another client adds a VM: the list is re-rendered from the server.
    with api_client(live_server) as c:
        r = c.post("/api/hosts/local/vms", json={"name": "kvmm-t-opsb-c", "memory_mib": 64})
        assert r.status_code == 201, r.text
    try:
        expect(page.locator("tr", has_text="kvmm-t-opsb-c")).to_have_count(1, timeout=15_000)
        expect(box).to_be_checked()
        expect(page.get_by_label("Select kvmm-t-opsb-c", exact=True)).not_to_be_checked()
        expect(page.locator("[data-selected-count]")).to_have_text("1")
    finally:
        with api_client(live_server) as c:
            c.delete("/api/hosts/local/vms/kvmm-t-opsb-c")


def test_schedule_form_shows_a_bad_cron_on_its_field(browser_login: Any, live_server: Any) -> None:
    page = browser_login("operator")
    page.goto("/schedules")
    form = page.locator("form#schedule-form")
    form.locator("input[name=name]").fill("kvmm-t-cron")
    form.locator("select[name=action]").select_option("start")
    form.locator("select[name=vms]").select_option("local/test")
    expect(form.locator("input[name=cron]")).to_be_hidden()
    form.locator("select[name=kind]").select_option("cron")
    expect(form.locator("input[name=at_time]")).to_be_hidden()
    form.locator("input[name=cron]").fill("61 * * * *")
    form.locator("button[type=submit]").click()
    error = page.locator("#err-cron")
    expect(error).to_be_visible()
    expect(error).to_contain_text("cron must be a valid 5-field expression")
    expect(page.locator("form#schedule-form input[name=cron]")).to_have_attribute(
        "aria-invalid", "true"
    )
    # What was typed is still there; fix it and the schedule is created and listed.
    form = page.locator("form#schedule-form")
    expect(form.locator("input[name=name]")).to_have_value("kvmm-t-cron")
    form.locator("input[name=cron]").fill("15 3 * * *")
    form.locator("button[type=submit]").click()
    row = page.locator("tr#schedule-kvmm-t-cron")
    try:
        expect(row).to_contain_text("cron 15 3 * * *")
        expect(row).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d 03:15 UTC"))
    finally:
        page.once("dialog", lambda d: d.accept())
        row.locator("button", has_text="Delete").click()
        expect(page.locator("tr#schedule-kvmm-t-cron")).to_have_count(0)
    assert live_server.manager.schedules.list() == []


def test_export_a_bundle_then_upload_it_through_the_import_form(
    browser_login: Any, live_server: Any, tmp_path: Any
) -> None:
    """A VM without disks (the test driver streams no volumes) exported from the page,
    downloaded, then uploaded with progress through the import form and imported."""
    with api_client(live_server) as c:
        r = c.post("/api/hosts/local/vms", json={"name": "kvmm-t-opsb-x", "memory_mib": 64})
        assert r.status_code == 201, r.text
    try:
        page = browser_login("admin")
        page.goto("/transfer")
        page.locator("#export-form select[name=vm]").select_option("local/kvmm-t-opsb-x")
        page.locator("#export-form button[type=submit]").click()
        link = page.locator("#export-job a", has_text="Download bundle")
        expect(link).to_be_visible(timeout=30_000)
        with page.expect_download() as info:
            link.click()
        bundle = tmp_path / "kvmm-t-opsb-x.tar.gz"
        info.value.save_as(bundle)
        assert bundle.read_bytes()[:2] == b"\x1f\x8b"

        form = page.locator("form#import-bundle")
        form.locator("select[name=pool]").select_option("default-pool")
        form.locator("input[name=name]").fill("kvmm-t-opsb-y")
        form.locator("input[type=file]").set_input_files(str(bundle))
        form.locator("button[type=submit]").click()
        expect(form.locator("[data-upload-status]")).to_contain_text("100%", timeout=30_000)
        job = page.locator("#import-job")
        expect(job).to_contain_text("Imported kvmm-t-opsb-y", timeout=30_000)
        job.locator("a", has_text="kvmm-t-opsb-y").click()
        expect(page).to_have_url(re.compile(r"/vms/local/kvmm-t-opsb-y$"))
    finally:
        with api_client(live_server) as c:
            for name in ("kvmm-t-opsb-x", "kvmm-t-opsb-y"):
                c.delete(f"/api/hosts/local/vms/{name}")


GONE_UUID = "6b1d3c1e-0000-4000-8000-00000000dead"


@pytest.fixture
def alert_of_a_deleted_vm(settings: Any) -> None:
    """What a manager that was down while a VM was deleted finds in its database at start:
    a rule and its alert still firing for a VM the host no longer has (no event can say
    it went). Written before the live server starts."""
    from kvmmanager.db import migrate
    from kvmmanager.db.base import make_engine, make_session_factory
    from kvmmanager.db.ops_models import Alert, AlertRule

    engine = make_engine(settings.database_url)
    try:
        migrate.upgrade(engine)
        with make_session_factory(engine).begin() as s:
            rule = AlertRule(name="kvmm-t-gone-cpu", metric="cpu_pct", op=">", threshold=90)
            s.add(rule)
            s.flush()
            s.add(
                Alert(
                    rule_id=rule.id, rule_name=rule.name, metric="cpu_pct", severity="warning",
                    host="local", subject=GONE_UUID, subject_name="kvmm-t-gone-vm",
                    state="firing", value=97.0, message="cpu_pct 97 > 90",
                )
            )  # fmt: skip
    finally:
        engine.dispose()


def test_alert_of_a_vm_deleted_while_the_manager_was_down_resolves(
    alert_of_a_deleted_vm: None, browser_login: Any
) -> None:
    """It stayed in "Firing now" for ever (only a lifecycle event resolved a deleted VM's
    alerts): now the first metrics pass that finds the VM gone resolves it, and the page
    shows it in the history as resolved because the VM was deleted."""
    page = browser_login("operator")
    page.goto("/alerts")
    firing = page.locator("#firing-table")
    expect(firing).to_contain_text("Nothing is firing.", timeout=30_000)
    expect(firing).not_to_contain_text("kvmm-t-gone-vm")
    past = page.locator("#alert-history tr", has_text="kvmm-t-gone-vm")
    expect(past.locator("td[data-label=State]")).to_have_text("resolved")
    expect(past.locator("td[data-label=Message]")).to_have_text("vm deleted")
    expect(page.locator("#firing-count")).to_be_hidden()
    shot(page, "alerts-deleted-vm-resolved")
