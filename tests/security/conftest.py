"""Fixtures for the security tests: role clients that never raise server exceptions
(a 500 must show up as a response we can count), and a snapshot of everything a write
could change, read as admin, to prove that a caller changed nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

TOKEN_NAME = "kvmm-t-sec-token"


@pytest.fixture
def role_client(app: FastAPI, client: TestClient) -> Iterator[Callable[[str], TestClient]]:
    """`role_client("viewer")` -> (client for a fresh user with that role). The app is
    started by `client`; server exceptions become 500 responses instead of raising."""
    made: list[TestClient] = []
    counter = iter(range(1_000_000))

    def make(role: str) -> TestClient:
        manager = app.state.manager
        username = f"kvmm-t-sec-{role}-{next(counter)}"
        if role == "admin" and not made:
            username = "admin"
        else:
            manager.users.create(username, "kvmm-t-sec-password", role)
        _, secret = manager.users.create_token(username, TOKEN_NAME)
        c = TestClient(
            app,
            raise_server_exceptions=False,
            follow_redirects=False,
            headers={"Authorization": f"Bearer {secret}"},
        )
        # Run on the started app's event loop, as one server would: an unentered
        # TestClient gives every request a fresh loop, which libvirt-bound tasks reject.
        c.portal = client.portal
        c.kvmm_username = username  # type: ignore[attr-defined]
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def _strip(obj: Any) -> Any:
    """Drop fields that change on their own (clocks, counters, live statistics)."""
    volatile = {"updated_at", "last_used_at", "last_seen", "stats", "cpu_time", "uptime"}
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in volatile}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


@pytest.fixture
def state_snapshot(client: TestClient) -> Callable[[], dict[str, Any]]:
    """Everything an API write could change, read as admin through the API."""

    def snap() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for path in ("/api/hosts", "/api/vms", "/api/users"):
            r = client.get(path)
            assert r.status_code == 200, (path, r.text)
            out[path] = r.json()
        out["/api/tokens?all"] = client.get("/api/tokens", params={"all": True}).json()
        for host in out["/api/hosts"]:
            name = host["name"]
            for kind in ("pools", "networks"):
                path = f"/api/hosts/{name}/{kind}"
                out[path] = client.get(path).json()
            for pool in out[f"/api/hosts/{name}/pools"]:
                path = f"/api/hosts/{name}/pools/{pool['name']}/volumes"
                out[path] = client.get(path).json()
            for vm in out["/api/vms"]["vms"]:
                path = f"/api/hosts/{name}/vms/{vm['uuid']}/xml"
                r = client.get(path)
                if r.status_code == 200:
                    out[path] = r.text
        return _strip(out)

    return snap
