"""Half-sent requests cannot hold the server: headers have a deadline and a size bound,
and connections are capped per address and in all, below the process's descriptor limit,
with the oldest idle one making room (api/server.py)."""

from __future__ import annotations

import contextlib
import resource
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests.security.anonymous.conftest import Served, closed_by_server, read_response

from kvmmanager.api.server import connection_cap
from kvmmanager.core.config import ServerSettings

FLOOD = 1100
HALF_SENT = b"POST /api/auth/login HTTP/1.1\r\nHost: kvmm\r\nContent-Type: applic"
# The packaged unit's old descriptor limit (systemd's default soft limit), under which
# ~1,100 stalled connections used to lock every other client out.
UNIT_NOFILE = 1024
# A header deadline far beyond the test: what saves the other client must be the caps.
CAPS_ONLY = {"KVMM_SERVER__HEADER_TIMEOUT_SECONDS": "600"}


@pytest.fixture
def many_sockets() -> Iterator[list[socket.socket]]:
    """A list to put attack sockets in, all closed afterwards; the test process gets the
    descriptors it needs for them (skips where the hard limit forbids)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = FLOOD + 200
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip(f"needs {want} descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    held: list[socket.socket] = []
    yield held
    for s in held:
        s.close()


def _half_send(sources: list[str], port: int, held: list[socket.socket]) -> None:
    for i in range(FLOOD):
        s = socket.socket()
        s.bind((sources[i % len(sources)], 0))
        s.settimeout(10)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(HALF_SENT)
        except OSError:
            pass  # refused or reset by the server: that is its defence working
        held.append(s)


def _served(srv: Served) -> int:
    with srv.client() as c:
        return c.get("/api/health", timeout=60).status_code


@pytest.mark.slow
def test_1100_half_sent_requests_from_many_addresses_do_not_keep_another_client_out(
    serve: Callable[..., Served], many_sockets: list[socket.socket]
) -> None:
    """1,100 connections from 44 addresses each send half a request and stall, against
    a server with the 1,024 descriptors the packaged unit used to have. Another client
    is still served; the server never runs out of descriptors."""
    srv = serve(env=CAPS_ONLY, nofile=UNIT_NOFILE)
    sources = [f"127.0.0.{n}" for n in range(2, 46)]
    _half_send(sources, srv.port, many_sockets)
    assert _served(srv) == 200
    assert srv.open_fds() < UNIT_NOFILE


@pytest.mark.slow
def test_1100_half_sent_requests_from_one_address_are_capped(
    serve: Callable[..., Served], many_sockets: list[socket.socket]
) -> None:
    """The same flood from one address: beyond its share (server.max_connections_per_
    address) its connections are closed at once, and another client is served."""
    srv = serve(env=CAPS_ONLY, nofile=UNIT_NOFILE)
    _half_send(["127.0.0.99"], srv.port, many_sockets)
    assert _served(srv) == 200
    assert srv.open_fds() < UNIT_NOFILE
    # Far fewer of the attacker's connections are still open than it made.
    alive = 0
    for s in many_sockets:
        s.setblocking(False)
        try:
            alive += s.recv(1) != b""
        except BlockingIOError:
            alive += 1  # open, nothing to read
        except OSError:
            pass  # reset or never connected
    assert alive <= 256, alive


HEADER_LIMITS = {"KVMM_SERVER__HEADER_TIMEOUT_SECONDS": "2"}


def test_half_sent_headers_are_timed_out(serve: Callable[..., Served]) -> None:
    """A connection whose request headers never complete is closed after the header
    deadline: on a fresh connection and after a kept-alive response alike."""
    srv = serve(env=HEADER_LIMITS)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(HALF_SENT)
        assert closed_by_server(sock)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: kvmm\r\n\r\n")
        first = b""
        while b'"ok"' not in first and b"}" not in first:
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
        sock.sendall(HALF_SENT)  # the next request, half sent: the keep-alive slowloris
        assert closed_by_server(sock)


def test_oversized_headers_are_refused(serve: Callable[..., Served]) -> None:
    """Headers that never end are cut off at 64 KiB with a 400, not buffered."""
    srv = serve(env=HEADER_LIMITS)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: kvmm\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(200):
                sock.sendall(b"X-Filler: " + b"a" * 1000 + b"\r\n")
        answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"headers larger than" in answer


def test_a_client_in_good_standing_is_not_affected(serve: Callable[..., Served]) -> None:
    """Many sequential requests on one kept-alive connection and concurrent clients from
    one address (under its share) are all served."""
    srv = serve(env=HEADER_LIMITS)
    with srv.client() as c:
        for _ in range(50):
            assert c.get("/api/health").status_code == 200
    clients = [httpx.Client(base_url=srv.url, timeout=30) for _ in range(20)]
    try:
        assert all(c.get("/api/health").status_code == 200 for c in clients)
    finally:
        for c in clients:
            c.close()


def test_the_packaged_unit_leaves_room_for_the_connection_cap() -> None:
    """The systemd unit raises the descriptor limit (LimitNOFILE), so the default
    server.max_connections fits under it with the descriptors the server keeps back."""
    unit = Path(__file__).parents[3] / "packaging" / "manager" / "kvm-manager.service"
    values = [
        line.split("=", 1)[1].strip()
        for line in unit.read_text().splitlines()
        if line.startswith("LimitNOFILE=")
    ]
    assert values, "no LimitNOFILE in the unit: systemd's 1,024 applies"
    nofile = int(values[-1].split(":")[-1])
    default = ServerSettings().max_connections
    assert connection_cap(default, nofile) == default


def test_websocket_upgrades_leave_the_connection_count(serve: Callable[..., Served]) -> None:
    """A WebSocket takes its connection over from the HTTP protocol: it no longer counts
    against its address, so 300 handshakes in a row (more than one address's share) leave
    that address able to connect. Each anonymous handshake gets a plain refusal."""
    srv = serve(env=HEADER_LIMITS)
    handshake = (
        b"GET /vms/local/test/console/serial HTTP/1.1\r\nHost: kvmm\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    for _ in range(300):
        s = socket.socket()
        s.bind(("127.0.0.8", 0))
        s.settimeout(30)
        s.connect(("127.0.0.1", srv.port))
        s.sendall(handshake)
        answer = s.recv(65536)
        s.close()
        assert answer.startswith((b"HTTP/1.1 401", b"HTTP/1.1 403")), answer[:200]
    with srv.client(source="127.0.0.8") as c:
        assert c.get("/api/health").status_code == 200
