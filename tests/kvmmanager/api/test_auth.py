"""Login sessions (cookie + CSRF), logout, password change, rate limiting."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kvmmanager.api.app import create_app
from kvmmanager.core.config import Settings

PASSWORD = "kvmm-t-plat-pass"


@pytest.fixture
def anon(client: TestClient) -> Iterator[TestClient]:
    """A cookie-less, token-less client on the started app, with a known operator."""
    client.app.state.manager.users.create("kvmm-t-plat-op", PASSWORD, "operator")
    c = TestClient(client.app)
    yield c
    c.close()


def login(c: TestClient, username: str = "kvmm-t-plat-op", password: str = PASSWORD) -> dict:
    r = c.post("/api/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return r.json()


def test_login_sets_strict_httponly_cookie(anon: TestClient) -> None:
    r = anon.post("/api/auth/login", json={"username": "kvmm-t-plat-op", "password": PASSWORD})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"].lower()
    assert cookie.startswith("kvmm_session=")
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert "secure" not in cookie  # plain http in tests
    body = r.json()
    assert body["role"] == "operator" and body["csrf_token"]
    me = anon.get("/api/auth/me").json()
    assert (me["username"], me["via"], me["csrf_token"]) == (
        "kvmm-t-plat-op",
        "session",
        body["csrf_token"],
    )


def test_wrong_password_and_unknown_user_look_the_same(anon: TestClient) -> None:
    a = anon.post("/api/auth/login", json={"username": "kvmm-t-plat-op", "password": "nope"})
    b = anon.post("/api/auth/login", json={"username": "ghost", "password": "nope"})
    assert a.status_code == b.status_code == 401
    assert a.json() == b.json()


def test_cookie_writes_need_csrf_header(anon: TestClient) -> None:
    csrf = login(anon)["csrf_token"]
    r = anon.post("/api/tokens", json={"name": "kvmm-t-plat-t"})
    assert r.status_code == 403 and r.json()["error"]["field"] == "X-CSRF-Token"
    r = anon.post("/api/tokens", json={"name": "kvmm-t-plat-t"}, headers={"X-CSRF-Token": "x"})
    assert r.status_code == 403
    r = anon.post("/api/tokens", json={"name": "kvmm-t-plat-t"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201
    # Reads need no CSRF header.
    assert anon.get("/api/tokens").status_code == 200


def test_logout_ends_the_session(anon: TestClient) -> None:
    csrf = login(anon)["csrf_token"]
    r = anon.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 204
    assert anon.get("/api/auth/me").status_code == 401


def test_password_change(anon: TestClient) -> None:
    csrf = login(anon)["csrf_token"]
    r = anon.post(
        "/api/auth/password",
        json={"current_password": "wrong-one", "new_password": "kvmm-t-plat-new"},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "current_password"
    r = anon.post(
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "new_password"
    r = anon.post(
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": "kvmm-t-plat-new"},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 200
    # The session that changed it goes on with a fresh CSRF token.
    assert anon.get("/api/auth/me").json()["csrf_token"] == r.json()["csrf_token"]
    login(anon, password="kvmm-t-plat-new")


def test_viewer_may_manage_own_tokens_and_password(client: TestClient) -> None:
    client.app.state.manager.users.create("kvmm-t-plat-viewer", PASSWORD, "viewer")
    c = TestClient(client.app)
    csrf = login(c, "kvmm-t-plat-viewer")["csrf_token"]
    h = {"X-CSRF-Token": csrf}
    created = c.post("/api/tokens", json={"name": "mine"}, headers=h).json()
    assert created["username"] == "kvmm-t-plat-viewer"
    r = c.post("/api/tokens", json={"name": "theirs", "username": "admin"}, headers=h)
    assert r.status_code == 403
    # Someone else's token looks like a missing one.
    admin_token = client.post("/api/tokens", json={"name": "kvmm-t-plat-adm"}).json()
    assert c.delete(f"/api/tokens/{admin_token['id']}", headers=h).status_code == 404
    assert c.delete(f"/api/tokens/{created['id']}", headers=h).status_code == 204


def test_login_is_rate_limited(settings: Settings) -> None:
    settings.auth.login_attempts_per_minute = 3
    app = create_app(settings)
    with TestClient(app) as c:
        for _ in range(3):
            r = c.post("/api/auth/login", json={"username": "admin", "password": "wrong"})
            assert r.status_code == 401
        r = c.post("/api/auth/login", json={"username": "admin", "password": "wrong"})
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limited"
        # Even the right password waits: the limit is on attempts.
        right = app.state.manager.initial_admin_password
        r = c.post("/api/auth/login", json={"username": "admin", "password": right})
        assert r.status_code == 429
