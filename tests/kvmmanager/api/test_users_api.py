from __future__ import annotations

from fastapi.testclient import TestClient


def test_user_crud(client: TestClient) -> None:
    r = client.post(
        "/api/users",
        json={"username": "kvmm-t-plat-u", "password": "long-enough", "role": "operator"},
    )
    assert r.status_code == 201
    assert r.json()["role"] == "operator" and "password" not in r.text
    assert {u["username"] for u in client.get("/api/users").json()} == {"admin", "kvmm-t-plat-u"}
    r = client.patch("/api/users/kvmm-t-plat-u", json={"role": "viewer", "disabled": True})
    assert r.json()["role"] == "viewer" and r.json()["disabled"] is True
    assert client.get("/api/users/kvmm-t-plat-u").json()["disabled"] is True
    assert client.delete("/api/users/kvmm-t-plat-u").status_code == 204
    assert client.get("/api/users/kvmm-t-plat-u").status_code == 404


def test_user_input_errors_name_the_field(client: TestClient) -> None:
    for body, field in (
        ({"username": "a/b", "password": "long-enough"}, "username"),
        ({"username": "kvmm-t-plat-ok", "password": "short"}, "password"),
        ({"username": "kvmm-t-plat-ok", "password": "long-enough", "role": "god"}, "role"),
        ({"username": "", "password": "long-enough"}, "username"),
    ):
        r = client.post("/api/users", json=body)
        assert r.status_code == 422, body
        assert r.json()["error"]["field"] == field
    client.post("/api/users", json={"username": "kvmm-t-plat-d", "password": "long-enough"})
    r = client.post("/api/users", json={"username": "kvmm-t-plat-d", "password": "long-enough"})
    assert r.status_code == 409
    r = client.delete("/api/users/admin")
    assert r.status_code == 409  # the last admin stays


def test_disabled_users_token_stops_working(client: TestClient) -> None:
    client.post("/api/users", json={"username": "kvmm-t-plat-dis", "password": "long-enough"})
    m = client.app.state.manager
    _, secret = m.users.create_token("kvmm-t-plat-dis", "t")
    other = TestClient(client.app, headers={"Authorization": f"Bearer {secret}"})
    assert other.get("/api/auth/me").status_code == 200
    client.patch("/api/users/kvmm-t-plat-dis", json={"disabled": True})
    assert other.get("/api/auth/me").status_code == 401
