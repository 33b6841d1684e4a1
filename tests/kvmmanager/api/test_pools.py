"""REST /api/hosts/{host}/pools on the test driver: CRUD, actions, errors, roles."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

BASE = "/api/hosts/local/pools"


def _name() -> str:
    return f"kvmm-t-sto-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pool(client: TestClient) -> Iterator[str]:
    name = _name()
    r = client.post(BASE, json={"name": name, "target": f"/kvmm-t-sto/{name}"})
    assert r.status_code == 201, r.text
    yield name
    client.delete(f"{BASE}/{name}", params={"delete_volumes": True, "force": True})


def test_create_get_list_delete(client: TestClient) -> None:
    name = _name()
    r = client.post(BASE, json={"name": name, "target": f"/kvmm-t-sto/{name}", "autostart": False})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == name and body["active"] and not body["autostart"]
    assert body["type"] == "dir" and body["capacity"] > 0
    assert client.get(f"{BASE}/{name}").json()["uuid"] == body["uuid"]
    assert name in [p["name"] for p in client.get(BASE).json()]
    assert client.delete(f"{BASE}/{name}").status_code == 204
    r = client.get(f"{BASE}/{name}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_actions_and_wrong_state(client: TestClient, pool: str) -> None:
    r = client.post(f"{BASE}/{pool}/actions/start")
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    r = client.post(f"{BASE}/{pool}/actions/stop")
    assert r.status_code == 200 and r.json()["state"] == "inactive"
    assert client.post(f"{BASE}/{pool}/actions/refresh").status_code == 409
    assert client.post(f"{BASE}/{pool}/actions/start").json()["active"]
    assert client.post(f"{BASE}/{pool}/actions/refresh").status_code == 200
    assert not client.post(f"{BASE}/{pool}/actions/noautostart").json()["autostart"]
    assert client.post(f"{BASE}/{pool}/actions/autostart").json()["autostart"]
    r = client.post(f"{BASE}/{pool}/actions/explode")
    assert r.status_code == 422 and r.json()["error"]["field"] == "action"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "", "target": "/srv/x"}, "name"),
        ({"name": "a/b", "target": "/srv/x"}, "name"),
        ({"name": "x" * 300, "target": "/srv/x"}, "name"),
        ({"name": "ok"}, "target"),
        ({"name": "ok", "target": "not/absolute"}, "target"),
        ({"name": "ok", "type": "zfs", "target": "/srv/x"}, "type"),
        ({"name": "ok", "target": "/srv/x", "bogus": 1}, "bogus"),
        ({"target": "/srv/x"}, "name"),
    ],
)
def test_bad_input_is_422_naming_the_field(client: TestClient, body: dict, field: str) -> None:
    r = client.post(BASE, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_unknown_pool_and_host_are_404(client: TestClient) -> None:
    for method, path in (
        ("GET", f"{BASE}/kvmm-t-sto-missing"),
        ("DELETE", f"{BASE}/kvmm-t-sto-missing"),
        ("POST", f"{BASE}/kvmm-t-sto-missing/actions/start"),
        ("GET", "/api/hosts/kvmm-t-sto-nohost/pools"),
    ):
        r = client.request(method, path)
        assert r.status_code == 404, (method, path, r.text)


def test_roles(client_as: Callable[[str], TestClient], pool: str) -> None:
    viewer, operator = client_as("viewer"), client_as("operator")
    assert viewer.get(BASE).status_code == 200
    assert viewer.post(f"{BASE}/{pool}/actions/refresh").status_code == 403
    assert operator.post(f"{BASE}/{pool}/actions/refresh").status_code == 200
    # Defining and deleting pools is for admins.
    body = {"name": _name(), "target": "/kvmm-t-sto/op"}
    assert operator.post(BASE, json=body).status_code == 403
    assert operator.delete(f"{BASE}/{pool}").status_code == 403


@pytest.mark.parametrize("action", ["start", "stop", "build", "autostart", "noautostart"])
def test_pool_state_actions_are_for_admins(
    client: TestClient, client_as: Callable[[str], TestClient], pool: str, action: str
) -> None:
    """Issue 15: an operator could stop any pool (even one holding running VMs' disks)
    while defining one needs admin; docs/security.md's table now says admin for both."""
    for role in ("viewer", "operator"):
        r = client_as(role).post(f"{BASE}/{pool}/actions/{action}")
        assert r.status_code == 403, (role, r.text)
        assert "admin role" in r.json()["error"]["message"] or role == "viewer"
    assert client.get(f"{BASE}/{pool}").json()["active"]  # nothing changed
    if action in ("start", "build"):  # both need a stopped pool
        client.post(f"{BASE}/{pool}/actions/stop")
    r = client.post(f"{BASE}/{pool}/actions/{action}")
    assert r.status_code == 200, r.text
