"""An anonymous client cannot make the server hold a big request body: bodies FastAPI
parses are bounded while they arrive (api/body_limits.py), before parsing and before
authentication, in size and in time."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable

import pytest
from tests.security.anonymous.conftest import Served, read_response

MB = 1024 * 1024
# One server for the module: small limits so the tests need little data and time.
LIMITS = {"KVMM_SERVER__MAX_BODY_BYTES": "65536", "KVMM_SERVER__BODY_TIMEOUT_SECONDS": "2"}


def _status(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1.1 "), raw[:200]
    return int(raw.split(b" ", 2)[1])


def _error(raw: bytes) -> dict:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])["error"]


@pytest.mark.slow
def test_an_anonymous_300_mb_body_does_not_grow_the_server_by_50_mb(
    serve: Callable[..., Served],
) -> None:
    """One anonymous client streams 300 MB of JSON (chunked, so no length is declared
    up front) at the login route. The server's resident memory, sampled from /proc while
    it happens, stays within 50 MB of what it was; the client is cut off."""
    srv = serve(env=LIMITS)
    with srv.client() as c:  # warm the login path up, as any server in use is
        for _ in range(3):
            c.post("/api/auth/login", json={"username": "admin", "password": "warm-up-x"})
    baseline = srv.rss()
    peak = baseline
    grew = threading.Event()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, srv.rss())
            if peak - baseline > 50 * MB:
                grew.set()  # stop sending: the test has failed already
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sent = 0
    chunk = b"a" * MB
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    try:
        sock.sendall(
            b"POST /api/auth/login HTTP/1.1\r\nHost: kvmm\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        body = [b'{"username": "admin", "password": "'] + [chunk] * 300 + [b'"}']
        try:
            for part in body:
                if grew.is_set():
                    break
                sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
                sent += len(part)
            sock.sendall(b"0\r\n\r\n")
            answer = read_response(sock)
        except (BrokenPipeError, ConnectionResetError):
            answer = b""
    finally:
        sock.close()
        # The last of the body is still being read or freed: sample a little longer.
        done.wait(1.0)
        done.set()
        sampler.join()
    assert peak - baseline <= 50 * MB, (
        f"server grew by {(peak - baseline) // MB} MB after {sent // MB} MB sent"
    )
    assert sent < 300 * MB or (answer and _status(answer) == 413), answer[:300]
    # And it still serves everyone else.
    with srv.client() as c:
        assert c.get("/api/health").status_code == 200


def test_a_declared_oversized_body_is_refused_before_a_byte_is_read(
    serve: Callable[..., Served],
) -> None:
    """Content-Length over the limit: 413 at once, naming the limit, while the client has
    not sent any of the body (the server does not wait for it)."""
    srv = serve(env=LIMITS)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/auth/login HTTP/1.1\r\nHost: kvmm\r\n"
            b"Content-Type: application/json\r\nContent-Length: 70000\r\n\r\n"
        )
        answer = read_response(sock)
    assert _status(answer) == 413, answer[:300]
    err = _error(answer)
    assert err["code"] == "too_large"
    assert "65536 bytes" in err["message"] and "server.max_body_bytes" in err["message"]


def test_a_body_that_stops_arriving_is_timed_out(serve: Callable[..., Served]) -> None:
    """Headers complete, half the declared body, then nothing: 408 naming the timeout,
    and the connection is closed (it holds no descriptor any longer)."""
    srv = serve(env=LIMITS)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/auth/login HTTP/1.1\r\nHost: kvmm\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"username": '
        )
        answer = read_response(sock)
        assert _status(answer) == 408, answer[:300]
        assert "server.body_timeout_seconds" in _error(answer)["message"]
        sock.settimeout(30)
        assert sock.recv(1) == b""  # closed by the server


def test_bodies_within_the_limit_and_streamed_uploads_still_work(
    serve: Callable[..., Served],
) -> None:
    """The limit is per route: a JSON body under it is parsed as before, and a volume
    bundle import (a streaming route with limits of its own) reads a body larger than it."""
    srv = serve(env=LIMITS)
    token = srv.admin_token()
    with srv.client(headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.post("/api/auth/login", json={"username": "admin", "password": "x" * 60000})
        assert r.status_code == 422  # parsed: the password is too long for the schema
        r = c.post("/api/auth/login", json={"username": "admin", "password": "x" * 70000})
        assert r.status_code == 413
        # Not a bundle, but read whole (256 KiB, over the JSON limit) before that is found.
        r = c.post(
            "/api/hosts/local/imports/bundle",
            params={"pool": "default-pool"},
            content=b"\0" * (256 * 1024),
            headers={"Content-Type": "application/gzip"},
        )
        assert r.status_code == 422, r.text
        assert "bundle" in r.json()["error"]["message"]
