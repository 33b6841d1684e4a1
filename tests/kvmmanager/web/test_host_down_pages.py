"""Pages of a host whose connection is gone (stopped here; a frozen libvirtd looks the
same to the pages): they show the host's error and the stale marker, never claim the
host is empty nor offer to create what may already be there."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

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
