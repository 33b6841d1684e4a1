"""Export/import XML routes and `kvm-manager export` on the test driver."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import libvirt
import pytest

PREFIX = "kvmm-t-ops-"


def _cleanup() -> None:
    c = libvirt.open("test:///default")
    try:
        for dom in c.listAllDomains():
            if dom.name().startswith(PREFIX):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
    finally:
        c.close()


def _wait(cond: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := cond():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def vm(client):
    host = client.app.state.manager.registry.get("local")
    _wait(lambda: host.connected, "the local host to connect")
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    r = client.post(
        "/api/hosts/local/vms",
        json={"name": name, "memory_mib": 64, "nics": [{"network": "default"}]},
    )
    assert r.status_code == 201, r.text
    yield name
    _cleanup()


def test_export_and_import_roundtrip(client, client_as, vm):
    viewer = client_as("viewer")
    r = viewer.get(f"/api/hosts/local/vms/{vm}/export")
    assert r.status_code == 200
    xml = r.json()["xml"]
    assert f"<name>{vm}</name>" in xml

    assert viewer.post("/api/hosts/local/imports", json={"xml": xml}).status_code == 403
    r = client.post("/api/hosts/local/imports", json={"xml": xml, "new_identity": True})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["vm"]["name"] == f"{vm}-2" and body["renamed_from"] == vm
    assert body["new_uuid"] is True

    r = client.post(
        "/api/hosts/local/imports",
        json={"xml": xml, "name": f"{vm}-x", "network_map": {"default": "kvmm-t-ops-none"}},
    )
    assert r.status_code == 404
    assert r.json()["error"]["field"] == "network_map"
    r = client.post("/api/hosts/local/imports", json={"xml": "<domain>"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "xml"
    assert client.get("/api/hosts/local/vms/kvmm-t-ops-none/export").status_code == 404


def test_cli_export_import(cli, live_server, tmp_path: Path):
    host = live_server.manager.registry.get("local")
    _wait(lambda: host.connected, "the local host to connect")
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    try:
        assert cli("vm", "create", name, "--memory", "64").exit_code == 0
        out = tmp_path / "vm.xml"
        r = cli("export", "xml", name, "-o", str(out))
        assert r.exit_code == 0, r.stderr
        assert f"<name>{name}</name>" in out.read_text()
        r = cli("--json", "export", "import", str(out), "--name", f"{name}-copy", "--new-identity")
        assert r.exit_code == 0, r.stderr
        assert json.loads(r.stdout)["vm"]["name"] == f"{name}-copy"
        r = cli("export", "import", str(out), "--network", "oops")
        assert r.exit_code == 2 and "--network must look like OLD=NEW" in r.stderr
    finally:
        _cleanup()


def test_a_bundle_export_on_a_host_not_connected_is_refused_up_front(app, client):
    """Like clone/migrate/delete: a host that does not answer gets a 503 naming it, not a
    202 job that fails at once. The VM stays listed (stale) from the inventory."""
    hc = app.state.manager.registry.get("local")
    client.portal.call(hc.stop)
    assert client.get("/api/hosts/local/vms/test").status_code == 200
    r = client.post("/api/hosts/local/vms/test/export/bundle")
    assert r.status_code == 503, r.text
    assert "host 'local' is disconnected" in r.text, r.text


def test_import_next_to_the_source_refuses_to_share_its_writable_disk(client, vm):
    """Issue 17's independent try, item 2: `export import --new-identity` made a VM that
    wrote to the source's disk, without a word."""
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    r = client.post(
        "/api/hosts/local/vms",
        json={"name": name, "memory_mib": 64, "disks": [{"pool": "default-pool", "size_gib": 1}]},
    )
    assert r.status_code == 201, r.text
    try:
        xml = client.get(f"/api/hosts/local/vms/{name}/export").json()["xml"]
        before = {v["name"] for v in client.get("/api/hosts/local/vms").json()}
        r = client.post("/api/hosts/local/imports", json={"xml": xml, "new_identity": True})
        assert r.status_code == 409, r.text
        err = r.json()["error"]
        assert f"writable disk of vm '{name}'" in err["message"], err
        assert "would share it" in err["message"] and "bundle" in err["message"], err
        assert {v["name"] for v in client.get("/api/hosts/local/vms").json()} == before
    finally:
        c = libvirt.open("test:///default")
        try:
            for vol in c.storagePoolLookupByName("default-pool").listAllVolumes():
                if vol.name().startswith(name):
                    vol.delete(0)
        finally:
            c.close()
