"""The create flow's OS search for an OS newer than this host's osinfo-db (issue 15):
Debian 12's own database (20221130) has no Debian 12, and "debian 12", "debian12" and
"bookworm" answered only "No operating system matches". Now the page says why and offers
the newest Debian it knows and a generic Linux, each picked with one click."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.shots import shot
from tests.kvmmanager.web.test_a11y_browser import serious_violations

from kvmmanager.services.vms import osinfo

pytestmark = pytest.mark.browser
WAIT = 30_000  # ms: bounded waits on a loaded shared machine


def test_a_search_for_a_newer_os_offers_the_nearest_ones(browser_login: Any) -> None:
    if not osinfo.available():
        pytest.fail("osinfo-db is missing: scripts/setup --dev installs it")
    if osinfo.search("debian 12"):
        pytest.skip("this host's osinfo-db knows Debian 12")
    page = browser_login("operator", bypass_csp=True)
    page.goto("/vms/new")
    form = page.locator("form#new-vm")
    search = form.locator("input[name=os_query]")
    results = form.locator("#os-results")
    for query in ("debian 12", "debian12", "bookworm"):
        search.fill(query)
        said = results.locator("[data-os-not-known]")
        expect(said).to_contain_text(f"does not know “{query}”", timeout=WAIT)
        expect(said.locator("button", has_text="Generic Linux 2022")).to_be_visible()
        if query != "bookworm":
            expect(said.locator("button").first).to_have_text("Debian 11")
    search.fill("debian 12")
    nearest = results.locator("[data-os-not-known] button", has_text="Debian 11")
    expect(nearest).to_be_visible(timeout=WAIT)
    shot(page, "vm-new-os-not-known")
    assert serious_violations(page) == []
    nearest.click()
    expect(form.locator("#os-picked")).to_have_text("Debian 11", timeout=WAIT)
