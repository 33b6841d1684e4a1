"""The VM page by keyboard (issue 15 newcomer try): the first Tab reaches the skip link,
and the tabs follow the ARIA tabs pattern (arrow keys move between them, one tab stop)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser
WAIT = 30_000  # ms: bounded waits on a loaded shared machine


def focused(page: Any) -> str:
    return str(page.evaluate("document.activeElement.textContent.trim()"))


def test_the_first_tab_on_a_vm_page_reaches_the_skip_link(browser_login: Any) -> None:
    page = browser_login("admin")
    page.goto("/vms/local/test")
    expect(page.locator("[data-panel=overview]")).to_be_visible(timeout=WAIT)
    page.keyboard.press("Tab")
    assert focused(page) == "Skip to content"


def test_arrow_keys_move_between_the_vm_page_tabs(browser_login: Any) -> None:
    page = browser_login("admin")
    page.goto("/vms/local/test")
    overview = page.locator("[data-tab=overview]")
    expect(overview).to_have_attribute("aria-selected", "true", timeout=WAIT)
    # One tab stop: only the selected tab is in the Tab order.
    assert page.locator("nav.tabs [data-tab][tabindex='0']").count() == 1
    overview.focus()
    page.keyboard.press("ArrowRight")
    assert focused(page) == "Console"
    expect(page.locator("[data-panel=console]")).to_be_visible()
    page.keyboard.press("ArrowLeft")
    assert focused(page) == "Overview"
    page.keyboard.press("End")
    assert focused(page) == "Snapshots & clone"
    page.keyboard.press("Home")
    assert focused(page) == "Overview"
