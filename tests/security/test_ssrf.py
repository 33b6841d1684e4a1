"""Webhooks and alert e-mail reach only public addresses unless an admin allow-lists a
network (services/alerts/outbound.py).

Before: a webhook or SMTP target on 127.0.0.1, 10.x, 169.254.169.254... was accepted, the
manager connected to it, and the delivery status / test answer reported what the
internal service said (SSRF)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kvmmanager.core.config import Settings
from kvmmanager.db.ops_models import EmailTarget, Webhook

SECRET = "kvmm-t-ssrf-secret-0123456789"


class Listener:
    """An HTTP receiver on 127.0.0.1 that records who reached it."""

    def __init__(self) -> None:
        self.hits: list[dict[str, str]] = []
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hits.append(dict(self.headers))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.server.shutdown()
    lst.server.server_close()


@pytest.fixture
def tcp_listener() -> Iterator[tuple[int, list[int]]]:
    """A bare TCP port on 127.0.0.1 (an internal SMTP server) counting connections."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.settimeout(0.2)
    accepted: list[int] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            accepted.append(1)
            conn.sendall(b"220 internal.example ESMTP secret-banner\r\n")
            conn.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield sock.getsockname()[1], accepted
    stop.set()
    t.join()
    sock.close()


INTERNAL = [
    "http://127.0.0.1:{port}/hook",
    "http://localhost:{port}/hook",
    "http://[::1]:{port}/hook",
    "http://[::ffff:127.0.0.1]:{port}/hook",
    "http://0.0.0.0:{port}/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.1.2.3/hook",
    "http://192.168.1.1/hook",
    "http://224.0.0.1/hook",
]


@pytest.mark.parametrize("url", INTERNAL)
def test_a_webhook_to_an_internal_address_is_refused(
    client: TestClient, listener: Listener, url: str
) -> None:
    r = client.post(
        "/api/webhooks",
        json={"name": "kvmm-t-ssrf", "url": url.format(port=listener.port), "secret": SECRET},
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "url"
    assert "outbound.allow_networks" in r.json()["error"]["message"]
    assert client.get("/api/webhooks").json() == []
    assert listener.hits == []


def test_a_stored_internal_webhook_is_refused_at_delivery(
    app: Any, client: TestClient, listener: Listener
) -> None:
    """The check runs again at each delivery (a name may resolve elsewhere by then, or
    the row predates the check): nothing is sent, the delivery says why."""
    with app.state.manager.db.begin() as s:
        s.add(
            Webhook(name="kvmm-t-ssrf-old", url=f"http://127.0.0.1:{listener.port}/", secret=SECRET)
        )
    r = client.post("/api/webhooks/kvmm-t-ssrf-old/ping")
    assert r.status_code < 300, r.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        (d,) = client.get("/api/webhooks/kvmm-t-ssrf-old/deliveries").json()
        if d["state"] != "pending":
            break
        time.sleep(0.05)
    assert d["state"] == "failed", d
    assert d["last_status"] is None
    assert "loopback" in d["last_error"]
    assert listener.hits == []


def test_an_allow_listed_network_is_reached_as_the_name_given(
    client: TestClient, settings: Settings, listener: Listener
) -> None:
    settings.outbound.allow_networks = ["127.0.0.0/8"]
    url = f"http://localhost:{listener.port}/hook"
    r = client.post("/api/webhooks", json={"name": "kvmm-t-ssrf-ok", "url": url, "secret": SECRET})
    assert r.status_code == 201, r.text
    assert client.post("/api/webhooks/kvmm-t-ssrf-ok/ping").status_code < 300
    deadline = time.monotonic() + 30
    while not listener.hits and time.monotonic() < deadline:
        time.sleep(0.05)
    # Connected to the checked address, still addressed to the name the admin gave.
    assert listener.hits and listener.hits[0]["Host"] == f"localhost:{listener.port}"


def test_an_smtp_target_on_an_internal_address_is_refused(
    app: Any, client: TestClient, tcp_listener: tuple[int, list[int]]
) -> None:
    port, accepted = tcp_listener
    body = {
        "name": "kvmm-t-ssrf-mail",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "security": "none",
        "from_addr": "k@example.org",
        "to_addrs": ["o@example.org"],
    }
    r = client.post("/api/email-targets", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "smtp_host"
    # A row stored before the check: its test send is refused before any connection, so
    # the internal server's banner never comes back in the answer.
    with app.state.manager.db.begin() as s:
        s.add(EmailTarget(**{**body, "name": "kvmm-t-ssrf-old"}))
    r = client.post("/api/email-targets/kvmm-t-ssrf-old/test")
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "smtp_host"
    assert "loopback" in r.json()["error"]["message"]
    assert "secret-banner" not in r.text
    time.sleep(0.3)
    assert accepted == []


def test_every_resolved_address_is_checked() -> None:
    from kvmmanager.core.errors import InvalidInput
    from kvmmanager.services.alerts.outbound import OutboundPolicy

    policy = OutboundPolicy()
    # One public and one private answer (a name that rebinds between two lookups).
    with pytest.raises(InvalidInput, match=r"10\.0\.0\.5, a private address"):
        policy.check_addresses("h.example", ["93.184.215.14", "10.0.0.5"], "url")
    assert policy.check_addresses("h.example", ["93.184.215.14"], "url") == "93.184.215.14"
    assert OutboundPolicy(["10.0.0.0/8"]).check_addresses("h", ["10.0.0.5"], "url") == "10.0.0.5"
