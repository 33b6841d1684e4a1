"""The clone form offers "Clone from a snapshot taken now" only where the clone service
can do it (issue 15): for a running VM without snapshots of its own. It was offered for
a shut-off VM (where it means nothing) and for a running VM with snapshots (which the
service refuses: libvirt cannot mix the temporary external snapshot with them); there
the form now says why instead."""

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
TAKEN_NOW = "Clone from a snapshot taken now"


def clone_form(page: Any, name: str) -> Any:
    page.goto(f"/vms/local/{name}#snapshots")
    form = page.locator("#snapshots form[hx-post$='/clone']")
    expect(form).to_be_visible()
    return form


def test_clone_from_a_snapshot_is_offered_only_where_it_can_work(
    browser_login: Any, api: httpx.Client
) -> None:
    off, on, snapped = f"{PREFIX}cl-off", f"{PREFIX}cl-on", f"{PREFIX}cl-snap"
    for name in (off, on, snapped):
        made(api.post(VMS, json={"name": name, "memory_mib": 64, "disks": [DISK]}))
    made(api.post(f"{VMS}/{snapped}/snapshots", json={"name": "s1"}))
    for name in (on, snapped):
        made(api.post(f"{VMS}/{name}/actions/start"))
    page = browser_login("admin")

    form = clone_form(page, off)
    expect(form.locator("option", has_text=TAKEN_NOW)).to_have_count(0)
    expect(form.locator("[data-clone-consistency]")).to_contain_text("copied as they are")
    shot(page, "vm-clone-shut-off")

    form = clone_form(page, on)
    choice = form.locator("select[name=consistent]")
    expect(choice).to_have_value("snapshot")  # the way that works for a running VM
    expect(form.locator("[data-clone-consistency]")).to_contain_text("merged back")

    form = clone_form(page, snapped)
    expect(form.locator("option", has_text=TAKEN_NOW)).to_have_count(0)
    said = form.locator("[data-clone-consistency]")
    expect(said).to_contain_text("has snapshots")
    expect(said).to_contain_text("Shut it down to clone it")
    shot(page, "vm-clone-running-with-snapshots")


def test_clone_of_a_running_vm_with_snapshots_is_disabled_with_its_reason(
    browser_login: Any, api: httpx.Client
) -> None:
    """The note said "Shut it down to clone it" beside an enabled Clone button, whose
    refusal toast named the API's consistent='snapshot', which the form does not show."""
    name = f"{PREFIX}cl-dis"
    made(api.post(VMS, json={"name": name, "memory_mib": 64, "disks": [DISK]}))
    made(api.post(f"{VMS}/{name}/snapshots", json={"name": "s1"}))
    made(api.post(f"{VMS}/{name}/actions/start"))
    page = browser_login("admin")
    form = clone_form(page, name)
    button = form.locator("button", has_text="Clone")
    expect(button).to_be_disabled()
    reason = page.locator(f"#{button.get_attribute('aria-describedby')}")
    expect(reason).to_contain_text("Shut it down to clone it")
    shot(page, "vm-clone-disabled-running-with-snapshots")

    # A page older than the VM's start still posts; what it is told is in the form's words.
    button.evaluate("b => b.disabled = false")
    button.click()
    said = page.locator("#toasts .toast.error")
    expect(said).to_contain_text("Shut it down", timeout=30_000)
    assert "consistent" not in said.inner_text(), said.inner_text()
