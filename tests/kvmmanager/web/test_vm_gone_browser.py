"""A VM deleted while its page is open: every tab of that page says so and offers no
action on it. The Hardware tab kept Apply/Insert/Detach/Attach/Add NIC enabled (its
refreshes answered 404, silently) and the Overview kept its Delete card."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.shots import shot
from tests.kvmmanager.web.test_feedback_browser import DISK, PREFIX, api, made

pytestmark = pytest.mark.browser
__all__ = ["api"]  # the fixture, used by name
VMS = "/api/hosts/local/vms"
WAIT = 30_000  # ms


def test_every_tab_of_a_deleted_vm_says_so_and_offers_no_action(
    browser_login: Any, api: httpx.Client
) -> None:
    name = f"{PREFIX}gone"
    made(api.post(VMS, json={"name": name, "memory_mib": 64, "disks": [DISK]}))
    page = browser_login("admin")
    page.goto(f"/vms/local/{name}#hardware")
    hardware = page.locator("[data-panel=hardware]")
    expect(hardware.locator("button", has_text="Attach disk")).to_be_enabled(timeout=WAIT)
    page.wait_for_function("() => document.documentElement.dataset.live === 'open'")

    made(api.delete(f"{VMS}/{name}"))
    notice = page.locator("[data-vm-gone-notice]")
    expect(notice).to_be_visible(timeout=WAIT)
    expect(notice).to_contain_text("no longer exists")
    # The tabs' refreshes say "gone" too: no error toast naming the VM's UUID.
    expect(page.locator("#toasts .toast.error")).to_have_count(0)
    for panel in ("hardware", "overview", "snapshots", "devices", "console", "agent"):
        page.locator(f"nav.tabs a[data-tab={panel}]").click()
        expect(notice).to_be_visible()
        live = page.locator(
            f"[data-panel={panel}] :is(button, input, select, textarea):not([disabled])"
        )
        expect(live).to_have_count(0, timeout=WAIT)
        if panel == "hardware":
            shot(page, "vm-gone-hardware")
    page.locator("nav.tabs a[data-tab=overview]").click()
    expect(page.locator("[data-panel=overview] button", has_text="Delete VM")).to_have_count(0)
    shot(page, "vm-gone-overview")
