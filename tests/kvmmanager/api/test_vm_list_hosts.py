"""`GET /api/vms` across hosts says which hosts it cannot vouch for: a host never listed
(its daemon failed or froze before the first inventory) is named as missing, never
silently absent; a host listed before and down since is named as stale, with the time
its rows are from. Test driver for `local`; the other host's socket does not exist."""

from __future__ import annotations

from fastapi.testclient import TestClient

GONE = "qemu+unix:///system?socket=/nonexistent/kvmm-t-vmlh.sock"


def test_vm_list_names_a_host_never_listed_and_a_stale_one(client: TestClient) -> None:
    manager = client.app.state.manager  # type: ignore[attr-defined]
    local = manager.registry.get("local")
    client.portal.call(local.wait_connected, 30)
    body = client.get("/api/vms").json()
    assert "test" in {v["name"] for v in body["vms"]}
    assert body["hosts_not_current"] == []

    hc = client.portal.call(manager.registry.add, "kvmm-t-vmlh-gone", GONE)
    client.portal.call(lambda: hc.wait_status("failed", seconds=30))
    body = client.get("/api/vms").json()
    assert "test" in {v["name"] for v in body["vms"]}
    [gap] = body["hosts_not_current"]
    assert gap["host"] == "kvmm-t-vmlh-gone" and gap["status"] == "failed"
    assert gap["missing"] is True and gap["stale_since"] is None
    assert gap["reason"], gap

    # Listed before, then down: its rows stay, marked as of libvirt's last answer.
    client.portal.call(local.stop)
    gaps = {g["host"]: g for g in client.get("/api/vms").json()["hosts_not_current"]}
    assert gaps["local"]["missing"] is False
    assert gaps["local"]["status"] == "disconnected"
    assert isinstance(gaps["local"]["stale_since"], float)
    # Filtered to one host, only that host is named.
    only = client.get("/api/vms", params={"host": "local"}).json()
    assert [g["host"] for g in only["hosts_not_current"]] == ["local"]
    assert "test" in {v["name"] for v in only["vms"]}
