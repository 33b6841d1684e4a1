"""Pages of a host whose connection is gone (stopped here; a frozen libvirtd looks the
same to the pages): they show the host's error and the stale marker, never claim the
host is empty nor offer to create what may already be there."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kvmmanager.core.config import Settings

PASSWORD = "kvmm-t-hdown-password"


@pytest.fixture
def down(web_app: FastAPI) -> Iterator[TestClient]:
    """An admin's page client; the `local` host's connection stopped after it connected."""
    with TestClient(web_app) as c:
        manager = web_app.state.manager
        manager.users.create("kvmm-t-hdown-admin", PASSWORD, "admin")
        r = c.post("/login", data={"username": "kvmm-t-hdown-admin", "password": PASSWORD})
        assert r.status_code == 200, r.text
        hc = manager.registry.get("local")
        c.portal.call(hc.wait_connected, 30)
        c.portal.call(hc.stop)
        yield c


def test_storage_page_of_a_host_down_shows_only_the_error(down: TestClient) -> None:
    page = down.get("/storage?host=local").text
    assert re.search(r'class="alert error">host &#39;local&#39; is disconnected', page), page
    assert "No storage pools on this host." not in page
    assert "Create a storage pool" not in page
    assert "has no storage pool yet" not in page


def test_networks_page_of_a_host_down_shows_only_the_error(down: TestClient) -> None:
    page = down.get("/networks?host=local").text
    assert re.search(r'class="alert error">host &#39;local&#39; is disconnected', page), page
    assert "No networks on this host." not in page
    assert "Create a network" not in page


def test_vm_detail_of_a_host_down_marks_the_state_stale_with_the_hosts_reason(
    down: TestClient,
) -> None:
    for path in ("/vms/local/test", "/vms/local/test/overview"):
        page = down.get(path).text
        assert 'id="vm-state">running</span>' in page, page
        assert re.search(r"data-stale[^>]*>stale \d+ s</span>", page), page
        assert "host local is disconnected: stopped" in page, page


def test_vm_list_says_which_host_was_never_listed(web_app: FastAPI) -> None:
    """A host that failed (or froze) before its first listing: the VM list says its VMs
    are missing instead of looking complete; filtered to that host, it is not an error."""
    with TestClient(web_app) as c:
        manager = web_app.state.manager
        manager.users.create("kvmm-t-hdown-viewer", PASSWORD, "viewer")
        r = c.post("/login", data={"username": "kvmm-t-hdown-viewer", "password": PASSWORD})
        assert r.status_code == 200, r.text
        gone = "qemu+unix:///system?socket=/nonexistent/kvmm-t-hdown.sock"
        hc = c.portal.call(manager.registry.add, "kvmm-t-hdown-gone", gone)
        c.portal.call(lambda: hc.wait_status("failed", seconds=30))
        for path in ("/vms", "/vms?host=kvmm-t-hdown-gone"):
            r = c.get(path)
            assert r.status_code == 200, r.text
            assert "Host kvmm-t-hdown-gone is failed and has not been listed" in r.text, r.text


@pytest.fixture
def fast_metrics(settings: Settings) -> Settings:
    # Samples every 0.1 s, so a live sparkline is drawn within a bounded wait below.
    settings.metrics.interval_seconds = 0.1
    return settings


def test_stale_rows_show_no_live_load_and_the_dashboard_says_which_counts_are_stale(
    fast_metrics: Settings, web_app: FastAPI
) -> None:
    """While a host does not answer, its rows are its last known state: the VM list dims
    them and shows no CPU sparkline nor "N %" (there are no live figures), and the
    dashboard's VM card says how many of its counts are such, per state and in all."""
    with TestClient(web_app) as c:
        manager = web_app.state.manager
        manager.users.create("kvmm-t-hdown-stale", PASSWORD, "admin")
        r = c.post("/login", data={"username": "kvmm-t-hdown-stale", "password": PASSWORD})
        assert r.status_code == 200, r.text
        hc = manager.registry.get("local")
        c.portal.call(hc.wait_connected, 30)
        uuid = manager.inventory.domain("local", "test").uuid
        row = re.compile(rf'<tr id="vm-local-{uuid}".*?</tr>', re.S)
        deadline = time.monotonic() + 30
        while 'class="spark"' not in (live := row.search(c.get("/vms").text)[0]):  # type: ignore[index]
            assert time.monotonic() < deadline, live
            time.sleep(0.1)
        assert "data-stale" not in live
        assert "data-stale-vms" not in c.get("/").text

        c.portal.call(hc.stop)
        mine = manager.inventory.domains("local")
        running = sum(1 for d in mine if d.state == "running")
        stale = row.search(c.get("/vms").text)[0]  # type: ignore[index]
        assert "data-stale-row" in stale and "data-stale " in stale, stale
        assert 'class="spark"' not in stale and " %</span>" not in stale, stale
        assert "data-stale-load" in stale and "(stale)" in stale, stale
        page = c.get("/").text
        assert f"{len(mine)} on hosts not responding: last known state" in page, page
        assert f"({running} last known)" in page, page
