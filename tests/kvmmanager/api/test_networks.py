"""REST /api/hosts/{host}/networks on the test driver: CRUD, actions, errors, roles."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

BASE = "/api/hosts/local/networks"


def _name() -> str:
    return f"kvmm-t-sto-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def net(client: TestClient) -> Iterator[str]:
    name = _name()
    body = {"name": name, "address": "10.213.80.1", "prefix": 24, "dhcp_start": "10.213.80.10",
            "dhcp_end": "10.213.80.20", "bridge": "virbr-kt-80"}  # fmt: skip
    r = client.post(BASE, json=body)
    assert r.status_code == 201, r.text
    yield name
    client.delete(f"{BASE}/{name}")


def test_create_get_list_delete(client: TestClient) -> None:
    name = _name()
    r = client.post(BASE, json={"name": name, "forward": "isolated", "autostart": False})
    assert r.status_code == 201, r.text
    assert r.json()["forward"] == "isolated" and r.json()["active"]
    assert client.get(f"{BASE}/{name}").json()["uuid"] == r.json()["uuid"]
    assert name in [n["name"] for n in client.get(BASE).json()]
    assert client.delete(f"{BASE}/{name}").status_code == 204
    assert client.get(f"{BASE}/{name}").status_code == 404


def test_actions_and_wrong_state(client: TestClient, net: str) -> None:
    assert client.post(f"{BASE}/{net}/actions/start").status_code == 409
    assert not client.post(f"{BASE}/{net}/actions/stop").json()["active"]
    assert client.post(f"{BASE}/{net}/actions/stop").status_code == 409
    assert client.get(f"{BASE}/{net}/leases").status_code == 409
    assert client.post(f"{BASE}/{net}/actions/start").json()["active"]
    assert not client.post(f"{BASE}/{net}/actions/noautostart").json()["autostart"]
    assert client.post(f"{BASE}/{net}/actions/autostart").json()["autostart"]
    r = client.post(f"{BASE}/{net}/actions/build")
    assert r.status_code == 422 and r.json()["error"]["field"] == "action"
    r = client.post(BASE, json={"name": net, "forward": "isolated"})
    assert r.status_code == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "a/b"}, "name"),
        ({"name": "x" * 300}, "name"),
        ({"name": "n", "forward": "teleport"}, "forward"),
        ({"name": "n", "bridge": "way-too-long-bridge"}, "bridge"),
        ({"name": "n", "address": "10.213.81.1", "prefix": 40}, "prefix"),
        ({"name": "n", "address": "999.1.1.1"}, "address"),
        ({"name": "n", "address": "10.213.81.1", "dhcp_start": "10.213.82.1",
          "dhcp_end": "10.213.82.9"}, "dhcp_start"),
        ({"name": "n", "address": "10.213.81.1", "dhcp_start": "10.213.81.50",
          "dhcp_end": "10.213.81.9"}, "dhcp_start"),
    ],
)  # fmt: skip
def test_bad_input_is_422_naming_the_field(client: TestClient, body: dict, field: str) -> None:
    r = client.post(BASE, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_unknown_network_is_404(client: TestClient) -> None:
    for method, path in (
        ("GET", f"{BASE}/kvmm-t-sto-missing"),
        ("DELETE", f"{BASE}/kvmm-t-sto-missing"),
        ("POST", f"{BASE}/kvmm-t-sto-missing/actions/start"),
        ("GET", f"{BASE}/kvmm-t-sto-missing/leases"),
    ):
        assert client.request(method, path).status_code == 404, (method, path)


def test_roles(client_as: Callable[[str], TestClient], net: str) -> None:
    viewer, operator = client_as("viewer"), client_as("operator")
    assert viewer.get(f"{BASE}/{net}").status_code == 200
    assert viewer.post(f"{BASE}/{net}/actions/stop").status_code == 403
    assert operator.post(BASE, json={"name": _name(), "forward": "isolated"}).status_code == 403
    assert operator.delete(f"{BASE}/{net}").status_code == 403


@pytest.mark.parametrize("action", ["stop", "start", "autostart", "noautostart"])
def test_network_state_actions_are_for_admins(
    client: TestClient, client_as: Callable[[str], TestClient], net: str, action: str
) -> None:
    """The independent try (issue 15): an operator could stop any network, cutting every
    VM on it (other users' too) off the network, while defining one needs admin; start and
    autostart change the host's networking as much. As for pools: admin only."""
    if action == "start":
        assert client.post(f"{BASE}/{net}/actions/stop").status_code == 200
    before = client.get(f"{BASE}/{net}").json()
    for role in ("viewer", "operator"):
        r = client_as(role).post(f"{BASE}/{net}/actions/{action}")
        assert r.status_code == 403, (role, r.text)
        assert role == "viewer" or "admin role" in r.json()["error"]["message"]
    assert client.get(f"{BASE}/{net}").json() == before  # nothing changed
    assert client.post(f"{BASE}/{net}/actions/{action}").status_code == 200
    if action == "start":
        return
    # An unknown action is bad input for every role, before the role is asked.
    r = client_as("operator").post(f"{BASE}/{net}/actions/build")
    assert r.status_code == 422 and r.json()["error"]["field"] == "action"
