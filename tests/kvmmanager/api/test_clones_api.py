"""Clone and template routes on the test driver: a clone is a job whose result is the
new VM; refusals come before the job (409/422 naming the field); viewers only read."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest
from fastapi.testclient import TestClient

POOL = "default-pool"
PREFIX = "kvmm-t-clone-"


def _cleanup() -> None:
    c = libvirt.open("test:///default")
    try:
        for dom in c.listAllDomains():
            if dom.name().startswith(PREFIX):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
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


def _job(client: TestClient, job_id: str) -> dict[str, Any]:
    return _wait(
        lambda: (
            (j := client.get(f"/api/jobs/{job_id}").json())["state"]
            in ("done", "failed", "cancelled")
            and j
        ),
        f"job {job_id}",
    )


@pytest.fixture
def vm(client: TestClient) -> Iterator[str]:
    host = client.app.state.manager.registry.get("local")
    _wait(lambda: host.connected, "the local host to connect")
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    r = client.post(
        "/api/hosts/local/vms",
        json={
            "name": name,
            "memory_mib": 128,
            "disks": [{"pool": POOL, "size_gib": 1}],
            "nics": [{"network": "default"}],
        },
    )
    assert r.status_code == 201, r.text
    yield name
    _cleanup()


def test_clone_route(client: TestClient, client_as: Any, vm: str) -> None:
    new = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    r = client.post(f"/api/hosts/local/vms/{vm}/clone", json={"name": new})
    assert r.status_code == 202, r.text
    job = _job(client, r.json()["job_id"])
    assert job["state"] == "done", job
    assert job["result"]["name"] == new and job["result"]["source"] == vm
    got = _wait(
        lambda: (x := client.get(f"/api/hosts/local/vms/{new}")).status_code == 200 and x.json(),
        "the clone in the inventory",
    )
    assert got["uuid"] == job["result"]["uuid"]

    r = client.post(f"/api/hosts/local/vms/{vm}/clone", json={"name": new})
    assert r.status_code == 409 and r.json()["error"]["field"] == "name"
    r = client.post(f"/api/hosts/local/vms/{vm}/clone", json={"name": "x/y"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "name"
    r = client.post(f"/api/hosts/local/vms/{vm}/clone", json={"name": "z", "mode": "linked"})
    assert r.status_code == 409 and r.json()["error"]["field"] == "mode"
    assert client.post(f"/api/hosts/local/vms/{vm}/actions/start").status_code == 200
    r = client.post(f"/api/hosts/local/vms/{vm}/clone", json={"name": f"{new}-2"})
    assert r.status_code == 409 and "consistent='snapshot'" in r.json()["error"]["message"]
    viewer = client_as("viewer")
    r = viewer.post(f"/api/hosts/local/vms/{vm}/clone", json={"name": f"{new}-3"})
    assert r.status_code == 403


def test_template_routes(client: TestClient, client_as: Any, vm: str) -> None:
    r = client.put(f"/api/hosts/local/vms/{vm}/template", json={"template": True})
    assert r.status_code == 200 and r.json()["template"] is True
    assert [t["name"] for t in client.get("/api/hosts/local/templates").json()] == [vm]
    new = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    r = client.post(f"/api/hosts/local/templates/{vm}/deploy", json={"name": new})
    assert r.status_code == 202, r.text
    job = _job(client, r.json()["job_id"])
    assert job["state"] == "done" and job["result"]["mode"] == "linked", job
    assert client.get(f"/api/hosts/local/vms/{vm}/template").json()["linked_clones"] == [new]
    r = client.put(f"/api/hosts/local/vms/{vm}/template", json={"template": False})
    assert r.status_code == 409 and new in r.json()["error"]["message"]
    r = client.post(f"/api/hosts/local/templates/{new}/deploy", json={"name": f"{new}-x"})
    assert r.status_code == 409 and r.json()["error"]["field"] == "template"
    viewer = client_as("viewer")
    assert viewer.get("/api/hosts/local/templates").status_code == 200
    r = viewer.put(f"/api/hosts/local/vms/{vm}/template", json={"template": False})
    assert r.status_code == 403


def test_a_vm_with_volume_disks_clones_and_deploys_as_a_template(
    client: TestClient, vm: str
) -> None:
    """Issue 17's independent try, item 3: VMs made by `export import-bundle` (disks
    `type='volume'`) could be neither cloned nor deployed as templates."""
    from kvmmanager.virt.xml.domain import Domain

    c = libvirt.open("test:///default")
    try:
        dom = c.lookupByName(vm)
        xml = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        [disk] = [d for d in xml.devices.disks if d.device == "disk"]
        vol = c.storageVolLookupByPath(disk.source_file)
        disk.clear_source()
        disk.type = "volume"
        disk.source_pool, disk.source_volume = POOL, vol.name()
        c.defineXML(xml.to_xml())
    finally:
        c.close()
    _wait(
        lambda: client.get(f"/api/hosts/local/vms/{vm}").json()["disks"][0]["volume"],
        "the volume disk in the inventory",
    )

    def made(new: str, r: Any, mode: str) -> dict[str, Any]:
        assert r.status_code == 202, r.text
        job = _job(client, r.json()["job_id"])
        assert job["state"] == "done", job
        got = _wait(
            lambda: (
                (x := client.get(f"/api/hosts/local/vms/{new}")).status_code == 200 and x.json()
            ),
            "the clone in the inventory",
        )
        [d] = [d for d in got["disks"] if d["device"] == "disk"]
        # The clone names its own volume, in the source's style, never the source's one.
        assert d["pool"] == POOL and d["volume"] not in (None, vol.name()), d
        assert job["result"]["mode"] == mode, job
        return d

    full = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    made(full, client.post(f"/api/hosts/local/vms/{vm}/clone", json={"name": full}), "full")

    r = client.put(f"/api/hosts/local/vms/{vm}/template", json={"template": True})
    assert r.status_code == 200 and r.json()["template"] is True, r.text
    linked = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    r = client.post(f"/api/hosts/local/templates/{vm}/deploy", json={"name": linked})
    made(linked, r, "linked")
