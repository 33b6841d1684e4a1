"""The VM list in pages, in a real browser (issue 19): the page renders one page of rows
whatever the number of VMs, the pager and the filters survive the list's live refreshes,
and a VM's live update that meets a refresh of the whole list patches that one row after
it instead of re-fetching the list again. Rows are counted, nothing is timed."""

from __future__ import annotations

import contextlib
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from kvmmanager.core.config import Settings
from kvmmanager.web.routes.vms import PAGE_SIZE

pytestmark = pytest.mark.browser

PREFIX = "kvmm-t-lpage-"
VMS = 250  # three pages of PAGE_SIZE (100)
UUID0 = 0x6C70_0000_4000_8000_000000000000
# Bounded waits for a busy machine, not speed claims.
WAIT = 30_000

ROWS = "#vm-rows tr[data-live-vm]"


def _uuid(i: int) -> str:
    return str(uuid.UUID(int=UUID0 + i))


def _node_file(path: Path) -> Path:
    """A test-driver host of VMS running domains (the driver starts a node file's domains)."""
    node = ET.Element("node")
    for i in range(VMS):
        d = ET.SubElement(node, "domain", type="test")
        ET.SubElement(d, "name").text = f"{PREFIX}{i:03d}"
        ET.SubElement(d, "uuid").text = _uuid(i)
        ET.SubElement(d, "memory", unit="KiB").text = "65536"
        ET.SubElement(d, "vcpu").text = "1"
        ET.SubElement(ET.SubElement(d, "os"), "type").text = "hvm"
    ET.ElementTree(node).write(path, encoding="unicode")
    return path


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    settings.libvirt.default_uri = f"test://{_node_file(tmp_path / 'node.xml')}"
    return settings


def _api(live_server: Any) -> httpx.Client:
    return httpx.Client(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {live_server.token}"},
        timeout=60,
    )


def _row(page: Any, i: int) -> Any:
    return page.locator(f'{ROWS}[data-live-vm="local/{_uuid(i)}"]')


def _list_refresh(page: Any) -> Any:
    """Re-fetch the list as a live event does; returns the request's response."""
    with page.expect_response(lambda r: urlsplit(r.url).path == "/vms") as answer:
        page.evaluate("htmx.trigger(document.getElementById('vm-rows'), 'kvmm-refresh')")
    return answer.value


def test_the_list_renders_one_page_and_keeps_it_across_refreshes(
    browser_login: Any, live_server: Any
) -> None:
    page = browser_login("viewer")
    page.goto("/vms")
    expect(page.locator(ROWS)).to_have_count(PAGE_SIZE)
    expect(page.locator("[data-page-summary]")).to_contain_text(f"1\u2013{PAGE_SIZE} of {VMS} VMs")
    expect(page.locator(ROWS).first).to_contain_text(f"{PREFIX}000")

    page.locator("[data-pager] button", has_text="Next").click()
    expect(page.locator(ROWS).first).to_contain_text(f"{PREFIX}{PAGE_SIZE:03d}")
    expect(page.locator(ROWS)).to_have_count(PAGE_SIZE)
    assert parse_qs(urlsplit(page.url).query)["page"] == ["2"]
    page.wait_for_function("() => document.documentElement.dataset.live === 'open'")

    # A live refresh of the list (what domain.added, host.status and the 30 s poll do)
    # re-fetches the page shown, not the first one.
    answer = _list_refresh(page)
    assert parse_qs(urlsplit(answer.url).query)["page"] == ["2"]
    expect(page.locator(ROWS).first).to_contain_text(f"{PREFIX}{PAGE_SIZE:03d}")

    # A VM on this page changes elsewhere: its row follows.
    with _api(live_server) as c:
        r = c.post(f"/api/hosts/local/vms/{PREFIX}150/actions/suspend")
        assert r.status_code == 200, r.text
    expect(_row(page, 150).locator("[data-state]")).to_have_text("paused", timeout=WAIT)

    page.locator("[data-pager] button", has_text="Last").click()
    expect(page.locator(ROWS)).to_have_count(VMS - 2 * PAGE_SIZE)


def test_the_filter_answers_from_the_server_and_survives_refreshes(
    browser_login: Any, live_server: Any
) -> None:
    page = browser_login("viewer")
    page.goto("/vms?page=3")
    expect(page.locator(ROWS)).to_have_count(VMS - 2 * PAGE_SIZE)
    page.wait_for_function("() => document.documentElement.dataset.live === 'open'")
    # Page 1 of the filtered list whatever page was shown: 020-029, then 200-249.
    page.fill("form.filters input[name=q]", f"{PREFIX}02")
    expect(page.locator(ROWS)).to_have_count(10)
    page.fill("form.filters input[name=q]", f"{PREFIX}2")
    expect(page.locator(ROWS)).to_have_count(50)
    expect(page.locator("[data-pager]")).to_have_count(0)

    answer = _list_refresh(page)
    assert parse_qs(urlsplit(answer.url).query)["q"] == [f"{PREFIX}2"]
    expect(page.locator(ROWS)).to_have_count(50)
    names = page.locator(f'{ROWS} td[data-label="Name"] a').all_inner_texts()
    assert sorted(names) == [f"{PREFIX}{i}" for i in range(200, 250)], names

    with _api(live_server) as c:
        r = c.post(f"/api/hosts/local/vms/{PREFIX}210/actions/suspend")
        assert r.status_code == 200, r.text
    expect(_row(page, 210).locator("[data-state]")).to_have_text("paused", timeout=WAIT)
    expect(page.locator(ROWS)).to_have_count(50)


def test_a_live_update_during_a_list_refresh_patches_its_row_only(
    browser_login: Any, live_server: Any
) -> None:
    page = browser_login("viewer")
    page.goto("/vms")
    expect(page.locator(ROWS)).to_have_count(PAGE_SIZE)
    page.wait_for_function("() => document.documentElement.dataset.live === 'open'")
    held: list[Any] = []

    def the_list(url: str) -> bool:
        return urlsplit(url).path == "/vms"

    # The list's refresh is held on its way to the server while the VM changes.
    def hold(route: Any) -> None:
        held.append(route)

    page.route(the_list, hold)
    page.evaluate("htmx.trigger(document.getElementById('vm-rows'), 'kvmm-refresh')")
    page.wait_for_function(
        "() => document.getElementById('vm-rows').classList.contains('htmx-request')"
    )
    with _api(live_server) as c:
        r = c.post(f"/api/hosts/local/vms/{PREFIX}005/actions/suspend")
        assert r.status_code == 200, r.text
    # The update met the list in flight: it waits for that row, not for the whole list.
    expect(_row(page, 5)).to_have_attribute("data-live-pending", "", timeout=WAIT)
    expect(page.locator("#vm-rows")).not_to_have_attribute("data-live-pending", "")
    assert len(held) == 1
    # Once the list has landed, that one row is fetched again (the old code re-fetched
    # the whole list instead, and never the row).
    row_path = f"/vms/local/{_uuid(5)}/row"
    with page.expect_request(lambda r: urlsplit(r.url).path == row_path, timeout=WAIT):
        held[0].continue_()
    page.unroute(the_list)
    expect(_row(page, 5).locator("[data-state]")).to_have_text("paused", timeout=WAIT)
    expect(page.locator(ROWS)).to_have_count(PAGE_SIZE)


def test_a_filter_typed_while_the_list_refreshes_is_not_overwritten(browser_login: Any) -> None:
    """A live refresh of the list sent before a keystroke, answered after it, would put
    unfiltered rows under the filter: the keystroke's request aborts it."""
    page = browser_login("viewer")
    page.goto("/vms")
    expect(page.locator(ROWS)).to_have_count(PAGE_SIZE)
    page.wait_for_function("() => document.documentElement.dataset.live === 'open'")
    held: list[Any] = []

    def the_list(url: str) -> bool:
        return urlsplit(url).path == "/vms"

    def hold_first(route: Any) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)

    page.route(the_list, hold_first)
    failed: list[str] = []
    page.on("requestfailed", lambda r: the_list(r.url) and failed.append(r.url))
    page.evaluate("htmx.trigger(document.getElementById('vm-rows'), 'kvmm-refresh')")
    for _ in range(WAIT // 100):  # the route handler runs while Playwright waits
        if held:
            break
        page.wait_for_timeout(100)
    assert len(held) == 1
    # The keystroke's answer lands while the refresh is still held.
    page.fill("form.filters input[name=q]", f"{PREFIX}02")
    expect(page.locator(ROWS)).to_have_count(10)
    # The refresh sent before it was aborted by the page (the old page let it land
    # after the filtered rows and show 100 unfiltered ones).
    for _ in range(WAIT // 100):
        if failed:
            break
        page.wait_for_timeout(100)
    assert failed and "q=&" in failed[0] + "&", failed
    with contextlib.suppress(PlaywrightError):  # the page gave up on it already
        held[0].continue_()
    page.unroute(the_list)
    expect(page.locator(ROWS)).to_have_count(10)
