"""The create form with no VM name, in a real browser (Debian's Chromium through
Playwright): "Next" does not leave the first step, and a post without a name (the step
list lets a user jump to the review) comes back as the form with the error beside the
Name field and every other value kept, never as raw JSON (issue 15)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.create_steps import step

pytestmark = pytest.mark.browser
WAIT = 30_000  # ms: bounded waits for an answer on a loaded shared machine


def test_next_refuses_an_empty_name_beside_the_field(browser_login: Any, live_server: Any) -> None:
    page = browser_login("operator")
    page.goto("/vms/new")
    form = page.locator("form#new-vm")
    form.locator("[data-step='1'] button:text-is('Next')").click()
    error = form.locator("[data-step='1'] #err-name")
    expect(error).to_be_visible(timeout=WAIT)
    expect(error).not_to_be_empty()
    expect(form.locator("[data-step='1']")).to_be_visible()
    expect(form.locator("input[name=memory_mib]")).to_be_hidden()
    expect(form.locator("input[name=name]")).to_be_focused()
    # With a name, Next goes on.
    form.locator("input[name=name]").fill("kvmm-t-req-vm")
    form.locator("[data-step='1'] button:text-is('Next')").click()
    expect(form.locator("input[name=memory_mib]")).to_be_visible()


def test_create_and_start_without_a_name_keeps_the_form(
    browser_login: Any, live_server: Any
) -> None:
    page = browser_login("operator")
    page.goto("/vms/new")
    form = page.locator("form#new-vm")
    step(page, 2)
    form.locator("input[name=memory_mib]").fill("768")
    step(page, 3)
    form.locator("input[name=source][value=blank]").check()
    form.locator("input[name=disk_gib]").fill("0")
    step(page, 4)
    form.locator("button.create-start").click()
    error = page.locator("form#new-vm #err-name")
    expect(error).to_contain_text("name is required", timeout=WAIT)
    expect(page.locator("form#new-vm [data-step='1']")).to_be_visible()
    assert "invalid_input" not in page.content()
    step(page, 2)
    expect(page.locator("form#new-vm input[name=memory_mib]")).to_have_value("768")
