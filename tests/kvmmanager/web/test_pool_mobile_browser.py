"""The pool page at 390 px (issue 15 newcomer try): an ISO used by several VMs made the
"Used by" cell a row of badges that could not wrap, so the page grew to 442-601 px and
its actions were cut off."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.live_api import api_client
from tests.kvmmanager.web.shots import shot

pytestmark = pytest.mark.browser
PREFIX = "kvmm-t-poolm-"
ISO = f"{PREFIX}install-media-with-a-long-name.iso"
POOL = "/api/hosts/local/pools/default-pool"
WAIT = 30_000  # ms: bounded waits for an answer on a loaded shared machine
VMS = [f"{PREFIX}vm-with-a-longer-name-{i}" for i in range(5)]


def remove_ours(c: httpx.Client) -> None:
    for vm in c.get("/api/hosts/local/vms").json():
        if vm["name"].startswith(PREFIX):
            c.delete(f"/api/hosts/local/vms/{vm['name']}")
    c.delete(f"{POOL}/volumes/{ISO}")


@pytest.fixture
def api(live_server: Any) -> Iterator[httpx.Client]:
    with api_client(live_server) as c:
        remove_ours(c)
        yield c
        remove_ours(c)


def test_the_pool_page_fits_390_px_with_an_iso_used_by_five_vms(
    browser_login: Any, api: httpx.Client
) -> None:
    made = api.post(f"{POOL}/volumes", json={"name": ISO, "capacity": "1M", "format": "raw"})
    assert made.status_code in (200, 201, 202), made.text
    for name in VMS:
        install = {"kind": "iso", "pool": "default-pool", "volume": ISO}
        made = api.post("/api/hosts/local/vms", json={"name": name, "install": install})
        assert made.status_code in (200, 201, 202), made.text
    page = browser_login("admin", viewport={"width": 390, "height": 800})
    page.goto("/storage/local/default-pool")
    used = page.locator("td[data-label='Used by']", has=page.locator(f"a:text-is('{VMS[4]}')"))
    expect(used).to_be_visible(timeout=WAIT)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide at a 390 px viewport"
    # The volume's actions stay reachable inside the viewport.
    row = page.locator("tr", has=page.locator(f"td:text-is('{ISO}')"))
    summary = row.locator("summary:text-is('Resize or copy')")
    # Bounded wait: twice in about ten runs on a loaded machine the row was first shown
    # without its actions (cause not found; an admin's fragment fetched at that moment
    # had them).
    expect(summary).to_be_visible(timeout=WAIT)
    box = summary.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 390, box
    shot(page, "pool-390-used-by-five")
