"""Changing one's password on the account page ends every session, this one included:
the person lands on the login page (its address too) and is told, there, that the
password changed. They saw the login form appear after a moment with no message while
the address bar still said /account."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.conftest import PASSWORD
from tests.kvmmanager.web.shots import shot

pytestmark = pytest.mark.browser
WAIT = 30_000  # ms


def test_a_password_change_lands_on_the_login_page_saying_so(browser_login: Any) -> None:
    page = browser_login("viewer")
    page.goto("/account")
    page.fill("input[name=current_password]", PASSWORD)
    page.fill("input[name=new_password]", "kvmm-t-new-password")
    page.click("button:text-is('Change password')")
    page.wait_for_url(re.compile(r".*/login(\?.*)?$"), timeout=WAIT)
    expect(page.locator("input[name=username]")).to_be_visible()
    expect(page.locator("#toasts .toast.ok", has_text="Password changed")).to_be_visible(
        timeout=WAIT
    )
    shot(page, "password-changed-login")
    page.fill("input[name=username]", page.username)
    page.fill("input[name=password]", "kvmm-t-new-password")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/$"), timeout=WAIT)


def test_a_generated_password_changed_first_lands_on_the_login_page_saying_so(
    chromium: Any, live_server: Any
) -> None:
    name = "kvmm-t-web-first"
    generated = live_server.manager.users.reset_admin(name)
    context = chromium.new_context(base_url=live_server.url)
    try:
        page = context.new_page()
        page.goto("/login")
        page.fill("input[name=username]", name)
        page.fill("input[name=password]", generated)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/account$"), timeout=WAIT)
        page.fill("input[name=current_password]", generated)
        page.fill("input[name=new_password]", "kvmm-t-new-password")
        page.click("button:text-is('Change password')")
        page.wait_for_url(re.compile(r".*/login(\?.*)?$"), timeout=WAIT)
        expect(page.locator("#toasts .toast.ok", has_text="Password changed")).to_be_visible(
            timeout=WAIT
        )
        shot(page, "password-changed-first-login")
    finally:
        context.close()
