"""Every route of the real app refuses anonymous callers, and viewers cannot write.

Routes come from the app itself (not a hand list), so routes other modules add later are
covered automatically; path parameters get dummy values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, WebSocket
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from kvmmanager.api.app import create_app
from kvmmanager.api.deps import WRITE_METHODS, is_public, is_self_service

PUBLIC_API = {
    ("POST", "/api/auth/login"),
    ("GET", "/api/health"),
    # Prometheus scrape: checks its own token (metrics.prometheus_token) or a user
    # itself; tests/kvmmanager/api/test_metrics_api.py proves it refuses anonymous callers.
    ("GET", "/metrics"),
    # The web UI's login form.
    ("GET", "/login"),
    ("POST", "/login"),
    # The product's icon, which browsers fetch before anyone logs in (a static file).
    ("GET", "/favicon.ico"),
}
DOCS = {"/api/docs", "/api/docs/init.js", "/api/openapi.json", "/openapi.json"}
# Writes a viewer may make because they only touch the caller's own account.
SELF_SERVICE = {
    "auth.logout",
    "auth.password",
    "tokens.create",
    "tokens.revoke",
    "web.logout",
    "web.account_password",
    "web.token_create",
    "web.token_revoke",
}
API_SELF_SERVICE = {"auth.logout", "auth.password", "tokens.create", "tokens.revoke"}
_PARAM = re.compile(r"\{([^}:]+)(?::([^}]+))?\}")


def fill(path: str) -> str:
    def dummy(m: re.Match[str]) -> str:
        return "1" if m.group(2) == "int" else "kvmm-t-plat-dummy"

    return _PARAM.sub(dummy, path)


def routes(app: FastAPI) -> Iterator[Any]:
    yield from iter_route_contexts(app.routes)


def http_routes(app: FastAPI) -> list[tuple[str, str, Any]]:
    out = []
    for rc in routes(app):
        if isinstance(rc.original_route, APIRoute):
            for method in sorted(rc.methods - {"HEAD"}):
                out.append((method, rc.path, rc))
    return out


def assert_refused(r: Any, method: str, path: str) -> None:
    where = f"{method} {path} -> {r.status_code}"
    if path.startswith("/api/"):
        assert r.status_code == 401, where
        assert r.json()["error"]["code"] == "unauthenticated", where
    elif method == "GET":
        # A web page sends the browser to the login form instead.
        assert r.status_code == 303, where
        assert r.headers["location"].startswith("/login"), where
    else:
        assert r.status_code == 401, where


def test_route_enumeration_sees_every_kind(client: TestClient, app: FastAPI) -> None:
    found = list(http_routes(app))
    assert ("POST", "/api/auth/login") in {(m, p) for m, p, _ in found}
    assert ("GET", "/api/jobs/{job_id}") in {(m, p) for m, p, _ in found}
    assert len(found) >= 15


def test_only_login_health_and_docs_are_public(client: TestClient, app: FastAPI) -> None:
    anon = TestClient(app, follow_redirects=False)
    checked = 0
    for rc in routes(app):
        route = rc.original_route
        if isinstance(route, APIRoute):
            for method in sorted(rc.methods - {"HEAD"}):
                key = (method, rc.path)
                if key in PUBLIC_API:
                    assert is_public(route)
                    continue
                assert not is_public(route), f"{key} is marked public"
                r = anon.request(method, fill(rc.path))
                assert_refused(r, method, rc.path)
                checked += 1
        elif isinstance(route, APIWebSocketRoute):
            with (
                pytest.raises((WebSocketDenialResponse, WebSocketDisconnect)) as e,
                anon.websocket_connect(fill(rc.path)),
            ):
                pass
            if isinstance(e.value, WebSocketDenialResponse):
                assert e.value.status_code == 401, rc.path
            else:
                assert e.value.code == 1008, rc.path
            checked += 1
        elif isinstance(route, Route):
            assert rc.path in DOCS, f"unexpected plain route {rc.path}"
        elif isinstance(route, Mount):
            # Static assets (CSS/JS) carry no data; anything else mounted must be reviewed.
            assert isinstance(route.app, StaticFiles), f"unexpected mount {rc.path}"
        else:
            pytest.fail(f"unknown route type {type(route).__name__} at {rc.path}")
    assert checked >= 15


def test_bad_credentials_are_refused(client: TestClient, app: FastAPI) -> None:
    anon = TestClient(app)
    for headers in (
        {"Authorization": "Bearer kvmm_not-a-real-token"},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"Authorization": "Bearer "},
    ):
        r = anon.get("/api/auth/me", headers=headers)
        assert r.status_code == 401, headers
    anon.cookies.set("kvmm_session", "forged")
    assert anon.get("/api/auth/me").status_code == 401


def test_viewer_cannot_change_anything(
    client: TestClient, app: FastAPI, client_as: Callable[[str], TestClient]
) -> None:
    viewer = client_as("viewer")
    self_service = set()
    checked = 0
    for method, path, rc in http_routes(app):
        if method not in WRITE_METHODS or (method, path) in PUBLIC_API:
            continue
        if is_self_service(rc.original_route):
            self_service.add(rc.name)
            continue
        r = viewer.request(method, fill(path))
        assert r.status_code == 403, f"viewer {method} {path} -> {r.status_code}"
        if path.startswith("/api/"):
            assert r.json()["error"]["code"] == "forbidden"
        checked += 1
    # A new self-service write must be reviewed and listed here: it is open to viewers.
    assert self_service <= SELF_SERVICE, self_service - SELF_SERVICE
    assert self_service >= API_SELF_SERVICE
    assert checked >= 10


def test_viewer_can_read(client_as: Callable[[str], TestClient]) -> None:
    viewer = client_as("viewer")
    me = viewer.get("/api/auth/me").json()
    assert me["role"] == "viewer"
    assert viewer.get("/api/jobs").status_code == 200
    # Admin-only reads stay closed.
    assert viewer.get("/api/users").status_code == 403
    assert viewer.get("/api/audit").status_code == 403


def test_operator_is_not_admin(client_as: Callable[[str], TestClient]) -> None:
    op = client_as("operator")
    r = op.post("/api/users", json={"username": "kvmm-t-plat-x", "password": "long-enough"})
    assert r.status_code == 403
    assert op.get("/api/tokens", params={"all": True}).status_code == 403


def test_websocket_routes_are_covered_by_default(settings: Any) -> None:
    """A websocket route added without any auth code still refuses anonymous callers."""
    probe = APIRouter()

    @probe.websocket("/api/kvmm-t-plat/ws/{name}")
    async def ws(websocket: WebSocket, name: str) -> None:
        await websocket.accept()
        await websocket.send_text(name)
        await websocket.close()

    app = create_app(settings)
    app.include_router(probe)
    with TestClient(app) as c:
        with (
            pytest.raises(WebSocketDenialResponse) as e,
            c.websocket_connect("/api/kvmm-t-plat/ws/a"),
        ):
            pass
        assert e.value.status_code == 401
        _, secret = app.state.manager.users.create_token("admin", "kvmm-t-plat-ws")
        headers = {"Authorization": f"Bearer {secret}"}
        with c.websocket_connect("/api/kvmm-t-plat/ws/a", headers=headers) as w:
            assert w.receive_text() == "a"
        # A session cookie works from this server's own pages, not from another origin.
        manager = app.state.manager
        # Not the first admin: its generated password must be changed before any use.
        manager.users.create("kvmm-t-plat-ws-user", "kvmm-t-plat-ws-pass", "operator")
        sid, _csrf, _exp = manager.users.create_session(
            manager.users.authenticate("kvmm-t-plat-ws-user", "kvmm-t-plat-ws-pass")
        )
        c.cookies.set("kvmm_session", sid)
        same = {"Origin": "http://testserver"}
        with c.websocket_connect("/api/kvmm-t-plat/ws/b", headers=same) as w:
            assert w.receive_text() == "b"
        evil = {"Origin": "https://evil.example"}
        with (
            pytest.raises(WebSocketDenialResponse) as e,
            c.websocket_connect("/api/kvmm-t-plat/ws/c", headers=evil),
        ):
            pass
        assert e.value.status_code == 403


def test_no_write_route_answers_nonsense_with_a_500(app: FastAPI, client: TestClient) -> None:
    """Bad input (wrong body shapes, unknown objects in the path) is never a server error."""
    admin = TestClient(app, raise_server_exceptions=False, follow_redirects=False)
    admin.headers["Authorization"] = client.headers["Authorization"]
    checked = 0
    for method, path, _rc in http_routes(app):
        if method not in WRITE_METHODS or path.endswith("/logout"):
            continue
        for body in (None, {"kvmm": [1, {"x": None}]}, [1, 2], "text", {"name": "\x00/.."}):
            r = admin.request(method, fill(path), json=body)
            assert r.status_code < 500, f"{method} {path} {body!r} -> {r.status_code} {r.text}"
            assert r.status_code >= 400, f"{method} {path} {body!r} was accepted"
            if path.startswith("/api/"):
                assert set(r.json()["error"]) >= {"code", "message"}
            checked += 1
    assert checked >= 50
