"""Every page at a phone's width and under axe-core (the npm package, pinned in
package.json), in Chromium on libvirt's test driver: no sideways scrolling at 390 px, no
serious or critical accessibility violation, and a favicon."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.conftest import PASSWORD
from tests.kvmmanager.web.shots import REPO, shot

pytestmark = pytest.mark.browser
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"

# (name for the screenshot, path): every page of the navigation, and each VM tab.
PAGES = [
    ("dashboard", "/"),
    ("vm-list", "/vms"),
    ("vm-create", "/vms/new"),
    ("vm-overview", "/vms/local/test#overview"),
    ("vm-console", "/vms/local/test#console"),
    ("vm-performance", "/vms/local/test#performance"),
    ("vm-hardware", "/vms/local/test#hardware"),
    ("vm-devices", "/vms/local/test#devices"),
    ("vm-agent", "/vms/local/test#agent"),
    ("vm-snapshots", "/vms/local/test#snapshots"),
    ("storage", "/storage"),
    ("storage-pool", "/storage/local/default-pool"),
    ("networks", "/networks"),
    ("alerts", "/alerts"),
    ("schedules", "/schedules"),
    ("backups", "/backups"),
    ("agent-iso", "/agent-iso"),
    ("transfer", "/transfer"),
    ("users", "/users"),
    ("audit", "/audit"),
    ("account", "/account"),
]


@pytest.fixture
def admin_page(chromium: Any, live_server: Any) -> Iterator[Any]:
    """An admin's page; CSP bypassed so the test can inject axe-core (the pages' own
    scripts still run under the same policy in every other test)."""
    live_server.manager.users.create("kvmm-t-a11y", PASSWORD, "admin")
    context = chromium.new_context(
        base_url=live_server.url, bypass_csp=True, viewport={"width": 1280, "height": 800}
    )
    page = context.new_page()
    page.goto("/login")
    page.fill("input[name=username]", "kvmm-t-a11y")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/$"))
    yield page
    context.close()


def settle(page: Any, path: str) -> None:
    page.goto(path)
    page.wait_for_load_state("networkidle")


def serious_violations(page: Any) -> list[str]:
    if not page.evaluate("() => typeof axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
            .filter((v) => v.impact === 'serious' || v.impact === 'critical')
            .map((v) => v.id + ' (' + v.impact + '): ' + v.nodes.slice(0, 3)
                .map((n) => n.target.join(' ')).join(', '))"""
    )
    return list(found)


def test_axe_finds_nothing_serious_on_any_page(admin_page: Any) -> None:
    assert AXE.exists(), "npm ci installs axe-core (package.json devDependencies)"
    found: dict[str, list[str]] = {}
    for name, path in PAGES:
        settle(admin_page, path)
        shot(admin_page, f"{name}-desktop")
        if problems := serious_violations(admin_page):
            found[path] = problems
    assert not found, found


def test_no_page_scrolls_sideways_at_390_px(admin_page: Any) -> None:
    admin_page.set_viewport_size({"width": 390, "height": 844})
    wide: dict[str, int] = {}
    for name, path in PAGES:
        settle(admin_page, path)
        shot(admin_page, f"{name}-phone")
        width = admin_page.evaluate("() => document.documentElement.scrollWidth")
        if width > 390:
            wide[path] = width
    assert not wide, wide


def test_favicon(live_server: Any, admin_page: Any) -> None:
    r = httpx.get(f"{live_server.url}/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in r.content
    expect(admin_page.locator("link[rel=icon]")).to_have_attribute("href", "/static/favicon.svg")
    assert Path(AXE).name == "axe.min.js"
