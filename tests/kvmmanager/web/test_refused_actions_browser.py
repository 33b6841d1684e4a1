"""Buttons the server would refuse are disabled with the server's reason: an operator's
Start and Delete VM on an admin's VM ("vm ... belongs to 'admin'"), and the last enabled
admin's role, Disable and Delete on the users page ("the last enabled admin")."""

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


def reason_of(page: Any, control: Any) -> str:
    described = control.get_attribute("aria-describedby") or ""
    return " ".join(page.locator(f"#{i}").inner_text() for i in described.split())


def test_an_operator_sees_an_admins_vm_actions_disabled_with_the_reason(
    browser_login: Any, api: httpx.Client
) -> None:
    name = f"{PREFIX}theirs"
    made(api.post(VMS, json={"name": name, "memory_mib": 64, "owner": "admin"}))
    page = browser_login("operator")
    page.goto(f"/vms/local/{name}")
    for label in ("Start", "Delete VM"):
        button = page.locator("[data-panel=overview] button", has_text=label)
        expect(button).to_be_disabled()
        assert "belongs to 'admin'" in reason_of(page, button), label
    shot(page, "vm-not-yours-operator")
    # Every other tab's changes too (the server refuses them alike); looking stays possible.
    page.locator("nav.tabs a[data-tab=hardware]").click()
    attach = page.locator("[data-panel=hardware] button", has_text="Attach disk")
    expect(attach).to_be_disabled()
    assert "belongs to 'admin'" in reason_of(page, attach)
    shot(page, "vm-not-yours-operator-hardware")


def test_the_last_enabled_admin_cannot_be_demoted_disabled_or_deleted_from_the_page(
    browser_login: Any, live_server: Any
) -> None:
    page = browser_login("admin")
    users = live_server.manager.users
    users.update("admin", disabled=True)  # the test's admin is the only one left
    try:
        page.goto("/users")
        row = page.locator("tbody tr", has_text=page.username)
        for control in (
            row.locator("select[name=role]"),
            row.locator("button", has_text="Disable"),
            row.locator("button", has_text="Delete"),
        ):
            expect(control).to_be_disabled()
            assert "last enabled admin" in reason_of(page, control)
        other = page.locator("tbody tr", has_text="admin").filter(has_text="disabled")
        expect(other.locator("button", has_text="Enable")).to_be_enabled()
        shot(page, "users-last-admin")
    finally:
        users.update("admin", disabled=False)
