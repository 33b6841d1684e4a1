"""The snapshot routes on the test driver: create (201 and as a job), list with the
tree, get, revert, delete, the quiesce policy; bad input names the field; viewers read."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest
from fastapi.testclient import TestClient

POOL = "default-pool"
PREFIX = "kvmm-t-snap-"


def _cleanup() -> None:
    c = libvirt.open("test:///default")
    try:
        for dom in c.listAllDomains():
            if dom.name().startswith(PREFIX):
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        for vol in c.storagePoolLookupByName(POOL).listAllVolumes():
            if vol.name().startswith(PREFIX):
                vol.delete(0)
    finally:
        c.close()


def _wait(cond: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def vm(client: TestClient) -> Iterator[str]:
    host = client.app.state.manager.registry.get("local")
    _wait(lambda: host.connected, "the local host to connect")
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    r = client.post(
        "/api/hosts/local/vms",
        json={"name": name, "memory_mib": 128, "disks": [{"pool": POOL, "size_gib": 1}]},
    )
    assert r.status_code == 201, r.text
    yield name
    _cleanup()


def test_snapshot_routes(client: TestClient, vm: str) -> None:
    base = f"/api/hosts/local/vms/{vm}/snapshots"
    r = client.post(base, json={"name": "first", "description": "clean"})
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["kind"] == "internal" and first["consistency"]["level"] == "offline"
    assert client.post(f"/api/hosts/local/vms/{vm}/actions/start").status_code == 200
    r = client.post(base, json={"name": "second"}, params={"background": True})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    job = _wait(
        lambda: (
            (j := client.get(f"/api/jobs/{job_id}").json())["state"] in ("done", "failed") and j
        ),
        "the snapshot job",
    )
    assert job["state"] == "done", job
    listed = client.get(base).json()
    assert listed["current"] == "second" and listed["quiesce_policy"] == "auto"
    assert listed["tree"] == [{"name": "first", "children": [{"name": "second", "children": []}]}]
    got = client.get(f"{base}/second").json()
    assert got["memory"] is True and got["parent"] == "first"

    r = client.post(f"{base}/first/revert", json={})
    assert r.status_code == 200 and r.json()["running"] is False
    r = client.delete(f"{base}/first", params={"children": True})
    assert r.status_code == 200 and r.json()["deleted"] == ["first", "second"]
    assert client.get(base).json()["snapshots"] == []

    r = client.put(f"/api/hosts/local/vms/{vm}/quiesce-policy", json={"policy": "never"})
    assert r.status_code == 200 and r.json()["quiesce_policy"] == "never"
    assert client.get(base).json()["quiesce_policy"] == "never"


def test_bad_input_and_roles(client: TestClient, client_as: Any, vm: str) -> None:
    base = f"/api/hosts/local/vms/{vm}/snapshots"
    assert client.post(base, json={"name": "one"}).status_code == 201
    r = client.post(base, json={"name": "one"})
    assert r.status_code == 409 and r.json()["error"]["field"] == "name"
    r = client.post(base, json={"name": "a/b"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "name"
    r = client.post(base, json={"name": "m", "memory": True})
    assert r.status_code == 422 and r.json()["error"]["field"] == "memory"
    r = client.post(base, json={"kind": "sideways"})
    assert r.status_code == 422
    r = client.get(f"{base}/nope")
    assert r.status_code == 404 and r.json()["error"]["field"] == "name"
    r = client.get(f"/api/hosts/local/vms/{PREFIX}missing/snapshots")
    assert r.status_code == 404 and r.json()["error"]["field"] == "vm"

    viewer = client_as("viewer")
    assert viewer.get(base).status_code == 200
    assert viewer.post(base, json={"name": "v"}).status_code == 403
    assert viewer.delete(f"{base}/one").status_code == 403
    operator = client_as("operator")  # not the VM's owner (the admin created it)
    assert operator.delete(f"{base}/one").status_code == 403
    assert client.delete(f"{base}/one").status_code == 200
