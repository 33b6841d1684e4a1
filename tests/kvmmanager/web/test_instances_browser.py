"""The dashboard lists the manager instances that share one PostgreSQL database, live
(issue 16 item 2, the independent try's D3): real `serve` processes on a throwaway
cluster, an admin's Chromium on one of them. What a person sees follows each instance's
start, heartbeat, kill -9 (the lease moving to the survivor, the dead one's heartbeat
stopping) and clean stop, with no reload of the page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.shots import shot
from tests.postgres_cluster import shared_cluster
from tests.reliability.balancer import start_instances
from tests.reliability.conftest import ServerProcess

pytestmark = pytest.mark.browser

# Fast beats so the lease moves within seconds of a kill (lease >= 2 beats, as required).
FLEET_ENV = {"KVMM_FLEET__HEARTBEAT_SECONDS": "1", "KVMM_FLEET__LEASE_SECONDS": "3"}
# The longest a step may take under a loaded machine: a start, a lease expiry, 15 s of
# silence before "not responding".
WAIT_MS = 90_000


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[str, dict[str, ServerProcess]]]:
    url = shared_cluster().new_database()
    instances = start_instances(tmp_path, url, ["a", "b"], extra_env=FLEET_ENV)
    try:
        yield url, instances
    finally:
        for srv in instances.values():
            srv.stop()


def _listed(srv: ServerProcess) -> list[dict[str, Any]]:
    with srv.api() as api:
        r = api.get("/api/instances")
        r.raise_for_status()
        rows: list[dict[str, Any]] = r.json()
        return rows


@pytest.fixture
def admin_page(chromium: Any) -> Iterator[Any]:
    """`admin_page(server, password)` -> a Chromium page logged in as admin there."""
    contexts: list[Any] = []

    def login(srv: ServerProcess, password: str) -> Any:
        context = chromium.new_context(viewport={"width": 1280, "height": 900}, base_url=srv.url)
        contexts.append(context)
        return _logged_in(context.new_page(), password)

    yield login
    for context in contexts:
        context.close()


def _logged_in(page: Any, password: str) -> Any:
    page.goto("/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/$"))
    return page


def test_the_dashboard_follows_the_instances_of_one_database_live(
    admin_page: Any, fleet: tuple[str, dict[str, ServerProcess]], tmp_path: Path
) -> None:
    url, instances = fleet
    a, b = instances["a"], instances["b"]
    a.api().close()  # changes the first password (written back to a's data dir)
    b.token = a.token  # one database: a's API token works on every instance
    listed = {i["address"]: i for i in _listed(a)}
    id_a, id_b = listed[a.url]["id"], listed[b.url]["id"]
    # a started first and took the lease; the page is b's, so it outlives a's kill.
    assert listed[a.url]["lease_holder"] and not listed[b.url]["lease_holder"]

    password = (Path(a.env["KVMM_DATA_DIR"]) / "initial-admin-password").read_text().strip()
    page = admin_page(b, password)
    card = page.locator("#instances")
    expect(card.get_by_role("heading")).to_have_text("Manager instances")
    row_a = card.locator(f'tr[data-instance="{id_a}"]')
    row_b = card.locator(f'tr[data-instance="{id_b}"]')
    expect(card.locator("tbody tr")).to_have_count(2)
    for row, srv, ident in ((row_a, a, id_a), (row_b, b, id_b)):
        expect(row).to_contain_text(ident)
        expect(row).to_contain_text(srv.url)
        expect(row.locator("[data-alive]")).to_have_text("alive")
    expect(row_a).to_contain_text(listed[a.url]["version"])
    expect(row_a.locator("[data-lease]")).to_have_text("holds the lease")
    expect(row_b).to_contain_text("standby")
    expect(row_b).to_contain_text("this page")
    expect(row_a).not_to_contain_text("this page")
    page.wait_for_function("document.documentElement.dataset.live === 'open'")

    # A third instance appears without a reload (its start reaches b through PostgreSQL).
    (c,) = start_instances(tmp_path / "c", url, ["c"], extra_env=FLEET_ENV).values()
    instances["c"] = c
    expect(card.locator("tbody tr")).to_have_count(3, timeout=WAIT_MS)
    row_c = card.locator("tbody tr", has_text=c.url)
    expect(row_c.locator("[data-alive]")).to_have_text("alive")
    # The heartbeat column moves with the beats: a's row (another process) goes back to
    # "0 s ago" at each of its beats.
    expect(row_a.locator("[data-age-text]")).to_have_text("0 s ago", timeout=WAIT_MS)
    shot(page, "dashboard-instances")

    # kill -9 of the lease holder: the lease moves to a survivor, and a's row says its
    # heartbeat stopped; the page was never reloaded.
    page.evaluate("window.kvmmNotReloaded = true")
    a.kill()
    expect(card.locator("[data-lease]")).to_have_count(1, timeout=WAIT_MS)
    expect(row_a.locator("[data-lease]")).to_have_count(0, timeout=WAIT_MS)
    expect(row_a.locator("[data-alive]")).to_have_text("not responding", timeout=WAIT_MS)
    expect(row_a.locator("[data-age-text]")).not_to_have_text(re.compile(r"^\d s ago$"))
    holder = [i for i in _listed(b) if i["lease_holder"]]
    assert [i["id"] for i in holder] != [id_a]
    expect(card.locator(f'tr[data-instance="{holder[0]["id"]}"] [data-lease]')).to_have_text(
        "holds the lease"
    )
    expect(row_b.locator("[data-alive]")).to_have_text("alive")
    shot(page, "dashboard-instances-killed")

    # A clean stop takes its row away.
    c.stop()
    expect(row_c).to_have_count(0, timeout=WAIT_MS)
    expect(card.locator("tbody tr")).to_have_count(2)
    assert page.evaluate("window.kvmmNotReloaded") is True
