"""/api/hosts end to end on libvirt's test driver: roles, error shapes, info."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

TESTNODE_URI = f"test://{Path(__file__).parents[1] / 'virt' / 'fixtures' / 'testnode.xml'}"


def _until(cond, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def api(client: TestClient) -> Iterator[TestClient]:
    host = client.app.state.manager.registry.get("local")
    _until(lambda: host.connected, "the local host to connect")
    yield client


def test_list_and_get(api):
    (local,) = api.get("/api/hosts").json()
    assert (local["name"], local["status"], local["reason"]) == ("local", "connected", "")
    assert local["vm_count"] >= 1
    assert api.get("/api/hosts/local").json() == local


def test_add_show_and_remove(api):
    r = api.post("/api/hosts", json={"name": "kvmm-t-host-api", "uri": TESTNODE_URI})
    assert r.status_code == 201, r.text
    assert r.json()["uri"] == TESTNODE_URI
    _until(
        lambda: api.get("/api/hosts/kvmm-t-host-api").json()["status"] == "connected",
        "the new host to connect",
    )
    assert api.get("/api/hosts/kvmm-t-host-api").json()["vm_count"] == 2
    assert [h["name"] for h in api.get("/api/hosts").json()] == ["kvmm-t-host-api", "local"]

    assert api.delete("/api/hosts/kvmm-t-host-api").status_code == 204
    r = api.get("/api/hosts/kvmm-t-host-api")
    assert r.status_code == 404
    assert r.json()["error"] == {
        "code": "not_found",
        "message": "host 'kvmm-t-host-api' not found",
        "field": "host",
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Bad Name", "uri": "qemu:///system"}, "name"),
        ({"name": "", "uri": "qemu:///system"}, "name"),
        ({"name": "kvmm-t-host-x", "uri": "qemu:///sys\ntem"}, "uri"),
        ({"name": "kvmm-t-host-x", "uri": "nonsense"}, "uri"),
    ],
)
def test_add_rejects_bad_input_naming_the_field(api, body, field):
    r = api.post("/api/hosts", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_add_duplicate_is_a_conflict(api):
    r = api.post("/api/hosts", json={"name": "local", "uri": TESTNODE_URI})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "conflict"


def test_only_admins_add_or_remove(api, client_as):
    for role in ("operator", "viewer"):
        c = client_as(role)
        assert c.get("/api/hosts").status_code == 200
        r = c.post("/api/hosts", json={"name": "kvmm-t-host-nope", "uri": TESTNODE_URI})
        assert r.status_code == 403
        assert c.delete("/api/hosts/local").status_code == 403
    assert [h["name"] for h in api.get("/api/hosts").json()] == ["local"]


def test_info_and_capabilities(api):
    info = api.get("/api/hosts/local/info").json()
    assert info["driver"] == "TEST"
    assert info["accel"] == {
        "accel": "tcg",
        "domain_type": "qemu",
        "reason": "libvirt offers no kvm domain type for i686",
        "source": "probe",
    }
    caps = api.get("/api/hosts/local/capabilities").json()
    assert caps["host"]["arch"] == "i686"
    r = api.get("/api/hosts/local/domain-capabilities")
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "unsupported"
    assert api.get("/api/hosts/nohost/info").status_code == 404


def test_unauthenticated_is_refused(app, api):
    # Not entered as a context manager: the app (and its Manager) is already running.
    anonymous = TestClient(app)
    for path in ("/api/hosts", "/api/hosts/local", "/api/hosts/local/info"):
        assert anonymous.get(path).status_code == 401
    assert (
        anonymous.post("/api/hosts", json={"name": "x", "uri": "test:///default"}).status_code
        == 401
    )
