"""Refused WebSocket handshakes are clean refusals in the log of `kvm-manager serve`
(issue 17 item 20): anonymous clients, foreign origins and users without the right to a
console each get their HTTP status and one INFO access line, never an ERROR or a
traceback (uvicorn logged "ASGI callable returned without completing handshake" at ERROR
for every refused handshake, so anonymous clients could fill the log)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import websockets
from tests.security.anonymous.conftest import Served

INFO = {"KVMM_LOG_LEVEL": "info"}
VIEWER, PASSWORD = "kvmm-t-wsref-v", "kvmm-t-Wsref-pass-1"


def _refused(srv: Served, path: str, headers: dict[str, str]) -> int:
    """The HTTP status the server answers a WebSocket handshake on `path` with."""

    async def attempt() -> int:
        url = srv.url.replace("http://", "ws://") + path
        try:
            async with websockets.connect(url, additional_headers=headers, open_timeout=60):
                return 101
        except websockets.InvalidStatus as exc:
            return exc.response.status_code

    return asyncio.run(attempt())


def _session_cookie(srv: Served, username: str, password: str) -> str:
    with srv.client() as c:
        r = c.post("/api/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return "; ".join(f"{k}={v}" for k, v in c.cookies.items())


def _log_has(srv: Served, text: str) -> bool:
    deadline = time.monotonic() + 30
    while text not in srv.log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_refused_console_handshakes_log_no_error(serve: Callable[..., Served]) -> None:
    srv = serve(env=INFO)
    token = srv.admin_token()
    bearer = {"Authorization": f"Bearer {token}"}
    with srv.client(headers=bearer) as c:
        r = c.post(
            "/api/users",
            json={"username": VIEWER, "password": PASSWORD, "role": "viewer"},
        )
        assert r.status_code in (200, 201), r.text
    viewer = {"Cookie": _session_cookie(srv, VIEWER, PASSWORD)}
    admin_cookie = _session_cookie(srv, "admin", srv.admin_password)
    serial = "/vms/local/test/console/serial"
    cases = [
        ("/vms/local/test/console/vnc", {}, 401),  # no login at all
        (serial, {}, 401),
        (serial, {"Cookie": admin_cookie, "Origin": "http://evil.example"}, 403),
        (serial, {**viewer, "Origin": srv.url}, 403),  # a viewer has no console
        ("/vms/local/kvmm-t-wsref-none/console/serial", bearer, 404),
    ]
    for path, headers, status in cases:
        assert _refused(srv, path, headers) == status, (path, headers)
    # Every refusal has its access line at INFO, with its status.
    assert _log_has(srv, '"WebSocket /vms/local/kvmm-t-wsref-none/console/serial" 404')
    log = srv.log.read_text(errors="replace")
    for path, _, status in cases:
        assert f'"WebSocket {path}" {status}' in log, log[-3000:]
    assert "ERROR" not in log and "Traceback" not in log, log[-3000:]
    assert srv.proc.poll() is None
