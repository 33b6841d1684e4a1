"""Authorization matrix: every route of the real app (HTTP, WebSocket, SSE, downloads)
x every role (anonymous, viewer, operator, admin) x the caller's own VM and another
user's VM, against the written policy (docs/security.md):

- anonymous: nothing but login, health and the API docs;
- viewer: reads; writes only to their own account (self-service routes);
- operator: everything but the admin areas;
- admin: everything.

tests/kvmmanager/api/test_route_security.py proves "anonymous is refused" and "viewers
cannot write" on dummy objects; this matrix runs every role on real VMs with an owner,
checks the admin areas against a hand-written list (so a route that forgets
`require_role("admin")` fails here), covers WebSocket consoles, SSE streams and
downloads, and per-VM ownership (test_ownership_is_enforced).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import libvirt
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from kvmmanager.api.deps import WRITE_METHODS, is_public, is_self_service

ROLES = ("anonymous", "viewer", "operator", "admin")
RANK = {role: i for i, role in enumerate(ROLES)}
PUBLIC = {
    ("POST", "/api/auth/login"),
    ("GET", "/api/health"),
    ("GET", "/login"),
    ("POST", "/login"),
}
# Marked public for the framework but authenticating in the handler (a Prometheus token
# or any user): the matrix holds it to the viewer policy like any read.
SELF_AUTHENTICATING = {("GET", "/metrics")}
# The admin areas, written down independently of the code: users, audit, webhooks, and
# adding hosts/networks/pools (host-wide changes).
ADMIN_AREAS = (
    re.compile(r"^(/api)?/users(/|$)"),
    re.compile(r"^(/api)?/audit(/|$)"),
    re.compile(r"^/api/webhooks(/|$)"),
    re.compile(r"^/alerts/webhooks(/|$)"),  # the same, on the alerts page
    re.compile(r"^/api/email-targets(/|$)"),
    re.compile(r"^/alerts/email(/|$)"),  # the same, on the alerts page
)
ADMIN_WRITES = (
    ("POST", re.compile(r"^/api/hosts$")),
    ("DELETE", re.compile(r"^/api/hosts/\{host\}$")),
    ("POST", re.compile(r"^/api/hosts/\{host\}/(networks|pools)$")),
    ("DELETE", re.compile(r"^/api/hosts/\{host\}/(networks|pools)/\{[a-z]+\}$")),
    ("POST", re.compile(r"^/networks/\{host\}$")),
)
STREAM_SUFFIXES = ("/api/events", "/metrics/stream")
OWNER_VM, OTHER_VM = "kvmm-t-sec-own", "kvmm-t-sec-other"


def _dependency_names(route: Any) -> set[str]:
    names: set[str] = set()

    def walk(dependant: Any) -> None:
        for sub in dependant.dependencies:
            names.add(getattr(sub.call, "__name__", ""))
            walk(sub)

    walk(route.dependant)
    return names


def least_role(method: str, path: str, route: Any) -> str:
    """The policy: who may call this route (the lowest role)."""
    if (method, path) in PUBLIC:
        return "anonymous"
    if any(p.search(path) for p in ADMIN_AREAS) or any(
        m == method and p.search(path) for m, p in ADMIN_WRITES
    ):
        return "admin"
    if "require_admin" in _dependency_names(route):
        return "admin"
    if method in WRITE_METHODS and not is_self_service(route):
        return "operator"
    if "require_operator" in _dependency_names(route):
        return "operator"
    return "viewer"


def fill(path: str, vm: str) -> str:
    path = path.replace("{host}", "local").replace("{vm}", vm)
    return re.sub(r"\{([^}:]+)(?::int)?\}", "kvmm-t-sec-dummy", path)


def verdict(r: Any, path: str, method: str) -> str:
    if r.status_code == 401:
        return "unauthenticated"
    if r.status_code == 303 and r.headers.get("location", "").startswith("/login"):
        return "unauthenticated"
    if r.status_code == 403:
        return "forbidden"
    assert r.status_code < 500 or r.status_code in (502, 503), (method, path, r.text)
    return "allowed"


def expected(role: str, need: str) -> str:
    if RANK[role] >= RANK[need]:
        return "allowed"
    return "unauthenticated" if role == "anonymous" else "forbidden"


@pytest.fixture
def matrix_env(app: FastAPI, role_client: Callable[[str], TestClient]) -> Iterator[dict[str, Any]]:
    clients = {role: role_client(role) for role in ("admin", "viewer", "operator")}
    anon = TestClient(app, raise_server_exceptions=False, follow_redirects=False)
    anon.portal = clients["admin"].portal
    clients["anonymous"] = anon
    owner = clients["operator"].kvmm_username  # type: ignore[attr-defined]
    _purge_test_domains()
    for name, who in ((OWNER_VM, owner), (OTHER_VM, "admin")):
        r = clients["admin"].post(
            "/api/hosts/local/vms", json={"name": name, "memory_mib": 128, "owner": who}
        )
        assert r.status_code == 201, r.text
        assert r.json()["vm"]["owner"] == who
    yield {"clients": clients, "owner": owner}
    # libvirt's test:///default keeps its state while any connection in the process is
    # open: leave nothing behind for the next test. Straight through libvirt, because the
    # matrix itself may have removed the host or renamed a VM through the API.
    _purge_test_domains()


def _purge_test_domains() -> None:
    conn = libvirt.open("test:///default")
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith("kvmm-t-sec"):
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    finally:
        conn.close()


def _destructive(method: str, path: str) -> bool:
    return method == "DELETE" or path.endswith("/delete")


def _http_rows(app: FastAPI) -> list[tuple[str, str, Any]]:
    rows = []
    for rc in iter_route_contexts(app.routes):
        if isinstance(rc.original_route, APIRoute):
            for method in sorted(rc.methods - {"HEAD"}):
                rows.append((method, rc.path, rc.original_route))
    # Destructive calls last, so earlier rows still find the VMs.
    # Removing the host itself goes very last: every other row needs it.
    return sorted(rows, key=lambda row: (_destructive(*row[:2]), row[1] == "/api/hosts/{host}"))


def test_every_http_route_matches_the_policy_for_every_role_and_vm(
    app: FastAPI, matrix_env: dict[str, Any]
) -> None:
    clients = matrix_env["clients"]
    mismatches: list[str] = []
    checked = 0
    for method, path, route in _http_rows(app):
        if path.endswith(STREAM_SUFFIXES) or path.endswith("/logout"):
            continue  # streams: test_sse_streams; logout would end the caller's token
        assert is_public(route) == ((method, path) in PUBLIC | SELF_AUTHENTICATING), path
        need = least_role(method, path, route)
        vms = (OWNER_VM, OTHER_VM) if "{vm}" in path else (OWNER_VM,)
        for vm in vms:
            # Lowest role first: a refused call changes nothing for the next role.
            for role in ROLES:
                if role == "admin" and vm == OTHER_VM and _destructive(method, path):
                    continue  # keep it for the next rows; test_ownership_* covers admins
                r = clients[role].request(method, fill(path, vm), json={})
                got = verdict(r, path, method)
                want = expected(role, need)
                if vm == OTHER_VM and role == "operator" and method in WRITE_METHODS:
                    want = "forbidden"  # another user's VM: its owner and admins only
                if got != want:
                    mismatches.append(f"{role:9} {method} {path} [{vm}]: {got}, want {want}")
                checked += 1
    assert not mismatches, "\n".join(mismatches)
    assert checked >= 500


def test_admin_areas_are_declared_admin_in_code(app: FastAPI) -> None:
    """The hand-written admin areas all carry require_role('admin') in code."""
    seen = 0
    for method, path, route in _http_rows(app):
        listed = any(p.search(path) for p in ADMIN_AREAS) or any(
            m == method and p.search(path) for m, p in ADMIN_WRITES
        )
        if listed:
            assert "require_admin" in _dependency_names(route), (method, path)
            seen += 1
    assert seen >= 10


def test_websocket_consoles(app: FastAPI, matrix_env: dict[str, Any]) -> None:
    """A console is keyboard control of a guest: operators and admins only."""
    clients = matrix_env["clients"]
    ws_paths = [
        rc.path
        for rc in iter_route_contexts(app.routes)
        if isinstance(rc.original_route, APIWebSocketRoute)
    ]
    assert any(p.endswith("/console/vnc") for p in ws_paths), ws_paths
    assert any(p.endswith("/console/serial") for p in ws_paths), ws_paths
    for path in ws_paths:
        for vm in (OWNER_VM, OTHER_VM):
            for role in ROLES:
                outcome = _ws_outcome(clients[role], fill(path, vm))
                want = {"anonymous": "refused", "viewer": "forbidden"}.get(role, "past auth")
                if vm == OTHER_VM and role == "operator":
                    want = "forbidden"
                assert outcome == want, (role, path, vm, outcome)


def _ws_outcome(c: TestClient, path: str) -> str:
    try:
        with c.websocket_connect(path) as ws:
            # Accepted: the console then closes or streams; either is past authorization.
            ws.close()
            return "past auth"
    except WebSocketDenialResponse as e:
        return {401: "refused", 403: "forbidden"}.get(e.status_code, "past auth")
    except WebSocketDisconnect as e:
        # 1008 policy violation = refused by auth; other codes come from the console
        # itself (VM not running, no graphics): the caller was authorized.
        return "refused" if e.code == 1008 else "past auth"


def test_sse_streams(app: FastAPI, matrix_env: dict[str, Any]) -> None:
    """Event streams: anonymous refused, every role may listen (events carry no secrets;
    viewers see what they may read anyway)."""
    clients = matrix_env["clients"]
    for rc in iter_route_contexts(app.routes):
        if not (isinstance(rc.original_route, APIRoute) and rc.path.endswith(STREAM_SUFFIXES)):
            continue
        for role in ROLES:
            with clients[role].stream("GET", fill(rc.path, OWNER_VM)) as r:
                got = verdict(r, rc.path, "GET")
                if got == "allowed" and r.status_code == 200:
                    assert r.headers["content-type"].startswith("text/event-stream")
            assert got == expected(role, "viewer"), (role, rc.path, r.status_code)


def test_downloads(app: FastAPI, matrix_env: dict[str, Any]) -> None:
    """File downloads: volume content, the agent ISO, export bundles, guest files."""
    c = matrix_env["clients"]
    admin = c["admin"]
    r = admin.post(
        "/api/hosts/local/pools/default-pool/volumes",
        json={"name": "kvmm-t-sec-dl", "capacity": "1M", "format": "raw"},
    )
    assert r.status_code in (201, 202), r.text
    vol = "/api/hosts/local/pools/default-pool/volumes/kvmm-t-sec-dl/content"
    # A disk image holds everything inside the guest: operators only. The test driver
    # cannot stream volumes (422 unsupported): what counts here is getting past auth.
    for role, want in (
        ("anonymous", "unauthenticated"),
        ("viewer", "forbidden"),
        ("operator", "allowed"),
    ):
        with c[role].stream("GET", vol) as resp:
            assert verdict(resp, vol, "GET") == want, (role, resp.status_code)
    # Reading a guest file goes through the agent's per-method roles: file_read needs
    # more than viewer, checked before the guest is contacted.
    guest_file = f"/api/hosts/local/vms/{OWNER_VM}/agent/files/content"
    r = c["viewer"].get(guest_file, params={"path": "/etc/shadow"})
    assert r.status_code == 403, r.text
    assert c["anonymous"].get(guest_file, params={"path": "/etc/shadow"}).status_code == 401
    # Export bundles are operator-only downloads.
    bundle = "/api/exports/kvmm-t-sec-dummy"
    assert c["viewer"].get(bundle).status_code == 403
    assert c["anonymous"].get(bundle).status_code == 401


def test_ownership_is_enforced(matrix_env: dict[str, Any]) -> None:
    """An operator changes their own VM (and unowned ones), never another user's; admins
    change any; everyone with a role still sees every VM."""
    op = matrix_env["clients"]["operator"]
    r = op.patch(f"/api/hosts/local/vms/{OWNER_VM}", json={"description": "kvmm-t-sec touched"})
    assert r.status_code == 200, r.text
    r = op.patch(f"/api/hosts/local/vms/{OTHER_VM}", json={"description": "kvmm-t-sec touched"})
    assert r.status_code == 403 and "belongs to 'admin'" in r.json()["error"]["message"]
    assert op.get(f"/api/hosts/local/vms/{OTHER_VM}").json()["description"] != "kvmm-t-sec touched"
    assert op.post("/api/hosts/local/vms/test/actions/suspend").status_code == 200  # unowned
    admin = matrix_env["clients"]["admin"]
    r = admin.patch(f"/api/hosts/local/vms/{OWNER_VM}", json={"description": "by admin"})
    assert r.status_code == 200, r.text
    assert op.delete(f"/api/hosts/local/vms/{OTHER_VM}").status_code == 403
    listed = {v["name"]: v["owner"] for v in op.get("/api/vms").json()}
    assert listed[OWNER_VM] == matrix_env["owner"]
    assert listed[OTHER_VM] == "admin"
    viewer = matrix_env["clients"]["viewer"]
    assert {OWNER_VM, OTHER_VM} <= {v["name"] for v in viewer.get("/api/vms").json()}
    assert admin.delete(f"/api/hosts/local/vms/{OWNER_VM}").status_code == 200
