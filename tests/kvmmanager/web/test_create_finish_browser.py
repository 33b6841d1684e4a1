"""The create flow's last step in a real browser (Debian's Chromium, libvirt's test
driver): "Create and start" starts the new VM, "Create and edit" opens its Hardware tab
with the VM left off, and the OS picked from osinfo-db is kept on the VM (libosinfo
metadata, as virt-manager writes it) and shown on its Overview."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.create_steps import step

from kvmmanager.services.vms import osinfo

pytestmark = pytest.mark.browser
WAIT = 30_000  # ms: bounded waits on a loaded shared machine
PREFIX = "kvmm-t-finish-"


def _api(live_server: Any) -> httpx.Client:
    return httpx.Client(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {live_server.token}"},
        timeout=60,
    )


def _fill(page: Any, name: str, os_query: str = "", os_name: str = "") -> None:
    """Name (and OS) on step 1, a blank source without a new disk, no agent ISO."""
    page.goto("/vms/new")
    form = page.locator("form#new-vm")
    form.locator("input[name=name]").fill(name)
    if os_query:
        form.locator("input[name=os_query]").fill(os_query)
        form.locator("#os-results button", has_text=os_name).first.click()
        expect(form.locator("#os-picked")).to_have_text(os_name, timeout=WAIT)
    step(page, 3)
    form.locator("input[name=source][value=blank]").check()
    form.locator("input[name=disk_gib]").fill("0")
    step(page, 4)
    form.locator("input[name=install_agent]").uncheck()


def test_create_and_edit_opens_hardware_stopped_with_the_os_on_overview(
    browser_login: Any, live_server: Any
) -> None:
    if not osinfo.available():
        pytest.fail("osinfo-db is missing: scripts/setup --dev installs it")
    name = f"{PREFIX}edit"
    page = browser_login("operator")
    _fill(page, name, "debian 11", "Debian 11")
    page.locator("form#new-vm button.create-edit").click()
    expect(page).to_have_url(re.compile(rf"/vms/local/{name}#hardware$"), timeout=WAIT)
    expect(page.locator("section[data-panel=hardware]")).to_be_visible()
    expect(page.locator("#hardware input[name=vcpus]").first).to_be_visible(timeout=WAIT)
    expect(page.locator("#toasts")).to_contain_text(f"Created {name}")
    page.click("a[data-tab=overview]")
    expect(page.locator("#vm-state")).to_have_text("off")
    expect(page.locator("#vm-os")).to_contain_text("Debian 11")
    expect(page.locator("#vm-os")).to_contain_text("http://debian.org/debian/11")
    with _api(live_server) as c:
        xml = c.get(f"/api/hosts/local/vms/{name}/xml").json()["xml"]
        assert '<libosinfo:os id="http://debian.org/debian/11"/>' in xml, xml
        c.delete(f"/api/hosts/local/vms/{name}")


def test_create_and_start_starts_the_new_vm(browser_login: Any, live_server: Any) -> None:
    name = f"{PREFIX}start"
    page = browser_login("operator")
    _fill(page, name)
    page.locator("form#new-vm button.create-start").click()
    expect(page).to_have_url(re.compile(rf"/vms/local/{name}$"), timeout=WAIT)
    expect(page.locator("#vm-state")).to_have_text("running", timeout=WAIT)
    expect(page.locator("#vm-os")).to_have_text("not recorded")
    with _api(live_server) as c:
        c.post(f"/api/hosts/local/vms/{name}/actions/destroy")
        c.delete(f"/api/hosts/local/vms/{name}")
