"""A form the web UI refuses (shown again with its error, whatever its HTTP status) is an
"error" entry in the audit log with the reason the user saw, never "ok 200": the network
form, the users page and the webhook editor answer a refusal in three different ways."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.shots import shot

pytestmark = pytest.mark.browser
PREFIX = "kvmm-t-fa-"
WAIT = 30_000  # ms: bounded waits for an answer on a loaded shared machine


def entry(page: Any, action: str) -> Any:
    rows = page.locator("tbody tr")
    return rows.filter(has=page.locator("td[data-label=Action]", has_text=action))


def test_refused_web_forms_are_audited_as_errors_with_their_reason(browser_login: Any) -> None:
    page = browser_login("admin")
    page.goto("/networks?host=local")
    form = page.locator("form[hx-post^='/networks/']")
    form.locator("input[name=name]").fill(f"{PREFIX}net")
    form.locator("input[name=address]").fill("192.168.300.1")
    form.locator("button.primary").click()
    expect(page.locator("[role=alert]", has_text="address")).to_be_visible(timeout=WAIT)
    form = page.locator("form[hx-post^='/networks/']")
    form.locator("input[name=address]").fill("192.168.150.1")
    form.locator("input[name=dhcp_start]").fill("192.168.150.200")
    form.locator("input[name=dhcp_end]").fill("192.168.150.100")
    form.locator("button.primary").click()
    expect(page.locator("[role=alert]", has_text="192.168.150.200")).to_be_visible(timeout=WAIT)

    page.goto("/users")
    page.fill("input[name=username]", "bad/name")
    page.fill("input[name=password]", "long-enough-password")
    page.click("button:text-is('Add user')")
    expect(page.locator("p.alert.error")).to_be_visible(timeout=WAIT)

    page.goto(f"/audit?user={page.username}")
    nets = entry(page, "web.network_create")
    expect(nets).to_have_count(2, timeout=WAIT)
    for i in range(2):
        expect(nets.nth(i).locator("td[data-label=Result]")).to_contain_text("error")
    reasons = nets.locator(".audit-reason").all_inner_texts()
    assert any("address" in r for r in reasons), reasons
    assert any("192.168.150.200" in r for r in reasons), reasons
    user = entry(page, "web.user_create")
    expect(user.locator("td[data-label=Result]")).to_contain_text("error")
    expect(user.locator(".audit-reason")).not_to_be_empty()
    shot(page, "audit-refused-web-forms")
