"""What a newcomer tried in Chromium and the page got wrong (issue 15), on libvirt's test
driver: every check is of what the person sees (a message beside the field they typed,
a toast after the redirect, the rows a filter promises)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.shots import shot

pytestmark = pytest.mark.browser
PREFIX = "kvmm-t-newc-"


def api(live_server: Any) -> httpx.Client:
    return httpx.Client(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {live_server.token}"},
        timeout=60,
    )


def test_isolated_network_is_created_from_the_form(browser_login: Any) -> None:
    page = browser_login("admin")
    page.goto("/networks")
    page.fill("input[name=name]", f"{PREFIX}iso")
    page.select_option("select[name=forward]", label="Isolated")
    page.fill("input[name=address]", "192.168.213.1")
    page.click("text=Create network")
    row = page.locator("tr", has_text=f"{PREFIX}iso")
    expect(row.locator("td[data-label=Mode]")).to_have_text("isolated")
    expect(page.locator("[role=alert]")).to_have_count(0)
    shot(page, "networks-isolated-created")


def open_create(page: Any) -> None:
    page.goto("/vms/new")
    page.check("input[name=source][value=blank]")


def test_create_names_a_too_large_disk_beside_its_field(browser_login: Any) -> None:
    page = browser_login("operator")
    open_create(page)
    page.fill("input[name=name]", f"{PREFIX}big")
    page.fill("input[name=disk_gib]", "999999")
    page.uncheck("input[name=install_agent]")
    page.click("form#new-vm button.primary")
    error = page.locator("#err-disk_gib")
    expect(error).to_be_visible()
    expect(error).to_contain_text("New disk (GiB)")
    expect(error).not_to_contain_text("size_gib")
    # What the user unticked stays unticked.
    expect(page.locator("input[name=install_agent]")).not_to_be_checked()
    shot(page, "create-error-disk-too-large")


def test_create_explains_a_name_too_long_for_its_disk_volume(browser_login: Any) -> None:
    page = browser_login("operator")
    open_create(page)
    page.fill("input[name=name]", "k" * 64)
    page.fill("input[name=disk_gib]", "1")
    page.uncheck("input[name=install_agent]")
    page.click("form#new-vm button.primary")
    expect(page.locator("#err-name")).to_contain_text("too long for a VM with a new disk")
    expect(page).to_have_url(re.compile(r"/vms/new"))


def test_create_names_the_character_a_vm_name_may_not_hold(browser_login: Any) -> None:
    page = browser_login("operator")
    open_create(page)
    page.fill("input[name=name]", "<script>alert(1)</script>")
    page.fill("input[name=disk_gib]", "0")
    page.click("form#new-vm button.primary")
    error = page.locator("#err-name")
    expect(error).to_contain_text("'<' is not allowed")
    expect(error).not_to_contain_text("'/'")
    # And it stays checked when the user left it checked.
    expect(page.locator("input[name=install_agent]")).to_be_checked()


def test_create_accepts_any_whole_mib_and_shows_its_toasts_after_the_redirect(
    browser_login: Any,
) -> None:
    """1000 MiB is no browser error; one double-click creates one VM; the "Created" toast
    and the agent's warning (no agent ISO on this host) are shown on the VM's page."""
    page = browser_login("operator")
    open_create(page)
    page.fill("input[name=name]", f"{PREFIX}mib")
    page.fill("input[name=memory_mib]", "1000")
    assert page.eval_on_selector("input[name=memory_mib]", "e => e.checkValidity()")
    page.fill("input[name=disk_gib]", "0")
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.dblclick("form#new-vm button.primary")
    expect(page).to_have_url(re.compile(rf"/vms/local/{PREFIX}mib$"))
    toasts = page.locator("#toasts")
    expect(toasts).to_contain_text(f"Created {PREFIX}mib")
    expect(toasts.locator(".toast.warn")).to_contain_text("guest agent not attached")
    assert [u for u in posts if u.endswith("/vms/new")] == [posts[0]], posts
    shot(page, "create-done-toasts")
    # Shown once: the next page has no leftover toast.
    page.reload()
    expect(page.locator("#toasts .toast")).to_have_count(0)


def test_the_vm_list_keeps_its_filter_through_a_live_refresh(
    browser_login: Any, live_server: Any
) -> None:
    page = browser_login("operator")
    page.goto("/vms")
    page.wait_for_function("() => document.documentElement.dataset.live === 'open'")
    with page.expect_response(lambda r: "/vms?" in r.url and "q=test" in r.url):
        page.fill("input[name=q]", "test")
    rows = page.locator("#vm-rows tr")
    expect(rows).to_have_count(1)
    # Another user adds a VM: the live list refreshes, with the filter the box shows.
    refreshed = lambda r: r.request.headers.get("hx-trigger") == "vm-rows"  # noqa: E731
    with page.expect_response(refreshed), api(live_server) as c:
        r = c.post("/api/hosts/local/vms", json={"name": f"{PREFIX}other", "memory_mib": 64})
        assert r.status_code in (200, 201, 202), r.text
    expect(page.locator("input[name=q]")).to_have_value("test")
    expect(rows).to_have_count(1)
    expect(page.locator("#vm-rows")).not_to_contain_text(f"{PREFIX}other")
    shot(page, "vm-list-filtered")
