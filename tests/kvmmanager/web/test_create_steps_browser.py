"""The stepped create flow in a real browser (Debian's Chromium through Playwright): the
OS is picked from osinfo-db by a search, its recommended settings fill the later steps
with their reasons, Back and Next keep every input, the review step says what will be
made, and a refusal of the server opens the step of its field with the error beside it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.create_steps import step, submit
from tests.kvmmanager.web.shots import shot
from tests.kvmmanager.web.test_a11y_browser import serious_violations

from kvmmanager.services.vms import osinfo

pytestmark = pytest.mark.browser
WAIT = 30_000  # ms: bounded waits for an answer on a loaded shared machine
NAME = "kvmm-t-steps-vm"


def test_os_pick_fills_the_later_steps_and_back_keeps_the_input(
    browser_login: Any, live_server: Any
) -> None:
    if not osinfo.available():
        pytest.fail("osinfo-db is missing: scripts/setup --dev installs it")
    page = browser_login("operator", bypass_csp=True)  # axe-core is injected
    page.goto("/vms/new")
    form = page.locator("form#new-vm")
    # One step at a time: the resources step is not shown yet.
    expect(form.locator("[data-step='1']")).to_be_visible()
    expect(form.locator("input[name=memory_mib]")).to_be_hidden()
    form.locator("input[name=name]").fill("bad/name")
    form.locator("input[name=os_query]").fill("windows 11")
    option = form.locator("#os-results button", has_text="Microsoft Windows 11")
    expect(option).to_be_visible(timeout=WAIT)
    option.click()
    reasons = form.locator("#os-reasons")
    expect(reasons).to_contain_text("Disk on SATA", timeout=WAIT)
    expect(form.locator("#os-defaults")).to_contain_text("4096 MiB memory")
    shot(page, "create-step1-os-picked")
    assert serious_violations(page) == []

    form.locator("input[name=os_query]").fill("debian 11")
    form.locator("#os-results button", has_text="Debian 11").click()
    expect(reasons).to_contain_text("Disk on virtio: Debian 11 has its drivers", timeout=WAIT)
    form.locator("[data-step='1'] button:text-is('Next')").click()
    expect(form.locator("input[name=memory_mib]")).to_have_value("1024")
    expect(form.locator("input[name=vcpus]")).to_have_value("1")
    form.locator("input[name=memory_mib]").fill("768")
    shot(page, "create-step2-resources")
    assert serious_violations(page) == []
    form.locator("[data-step='2'] button:text-is('Next')").click()
    expect(form.locator("input[name=disk_gib]")).to_have_value("20")
    expect(form.locator("select[name=disk_bus]")).to_have_value("virtio")
    expect(form.locator("select[name=nic_model]")).to_have_value("virtio")
    form.locator("input[name=source][value=blank]").check()
    form.locator("input[name=disk_gib]").fill("0")
    # Back through the steps: what was typed is still there.
    form.locator("[data-step='3'] button:text-is('Back')").click()
    expect(form.locator("input[name=memory_mib]")).to_have_value("768")
    step(page, 1)
    expect(form.locator("input[name=name]")).to_have_value("bad/name")
    step(page, 4)
    review = form.locator("#review")
    expect(review).to_contain_text("Debian 11")
    expect(review).to_contain_text("768")
    form.locator("input[name=install_agent]").uncheck()
    shot(page, "create-step4-review")
    assert serious_violations(page) == []

    submit(page)
    # Refused by the server: the name's step opens, the error beside the field.
    error = page.locator("#err-name")
    expect(error).to_be_visible(timeout=WAIT)
    expect(page.locator("form#new-vm [data-step='1']")).to_be_visible()
    shot(page, "create-error-at-field")
    assert serious_violations(page) == []
    page.locator("form#new-vm input[name=name]").fill(NAME)
    step(page, 2)
    expect(page.locator("form#new-vm input[name=memory_mib]")).to_have_value("768")
    submit(page)
    expect(page).to_have_url(re.compile(rf"/vms/local/{NAME}$"), timeout=WAIT)
    expect(page.locator("#toasts")).to_contain_text(f"Created {NAME}")
    with _api(live_server) as c:
        vm = c.get(f"/api/hosts/local/vms/{NAME}").json()
        assert vm["memory_kib"] == 768 * 1024, vm
        c.delete(f"/api/hosts/local/vms/{NAME}")


def _api(live_server: Any) -> Any:
    import httpx

    return httpx.Client(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {live_server.token}"},
        timeout=60,
    )
