"""The VM list's batch bar: its actions are enabled only when something is picked (ticked
rows or a tag), the count follows the rows that are there (a bulk delete left "1
selected" for a row that was gone), and the delete confirmation names the VMs."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.shots import shot
from tests.kvmmanager.web.test_feedback_browser import PREFIX, api, made

pytestmark = pytest.mark.browser
__all__ = ["api"]  # the fixture, used by name
VMS = "/api/hosts/local/vms"
WAIT = 30_000  # ms


def test_bulk_bar_follows_the_selection_and_names_what_it_deletes(
    browser_login: Any, api: httpx.Client
) -> None:
    names = [f"{PREFIX}bulk-a", f"{PREFIX}bulk-b"]
    for name in names:
        made(api.post(VMS, json={"name": name, "memory_mib": 64}))
    page = browser_login("admin")
    page.goto("/vms")
    bar = page.locator(".batch-bar")
    count = bar.locator("[data-selected-count]")
    delete = bar.locator("button", has_text="Delete")
    expect(count).to_have_text("0")
    for label in ("Start", "Shut down", "Reboot", "Force off", "Snapshot", "Delete"):
        expect(bar.locator("button", has_text=label)).to_be_disabled()
    shot(page, "vm-list-bulk-nothing-selected")

    page.check(f"input[aria-label='Select {names[0]}']")
    expect(count).to_have_text("1")
    expect(delete).to_be_enabled()
    asked: list[str] = []

    def answer(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", answer)
    page.wait_for_function("() => document.documentElement.dataset.live === 'open'")
    delete.click()
    expect(page.locator(f"input[aria-label='Select {names[0]}']")).to_have_count(0, timeout=WAIT)
    assert asked and names[0] in asked[0] and names[1] not in asked[0], asked
    expect(count).to_have_text("0", timeout=WAIT)
    expect(delete).to_be_disabled()
    shot(page, "vm-list-bulk-after-delete")
