"""Webhooks against a real local HTTP receiver (http.server in a thread): signed JSON,
retried with backoff after failures, given up after max attempts, filtered by severity."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kvmmanager.core.errors import Conflict, InvalidInput

# Webhooks and e-mail here go to receivers on 127.0.0.1, an internal address refused by
# default (services/alerts/outbound.py): allow-listed explicitly.
pytestmark = pytest.mark.usefixtures("outbound_loopback")

SECRET = "kvmm-t-ops-shared-secret"


class Receiver:
    """Records every request; answers `fail_first` requests with 500, then 204."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests.append({"headers": dict(self.headers), "body": body})
                    failing = len(receiver.requests) <= receiver.fail_first
                self.send_response(500 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _valid(req: dict[str, Any], secret: str = SECRET) -> bool:
    h = req["headers"]
    expected = hmac.new(
        secret.encode(), h["X-KVMM-Timestamp"].encode() + b"." + req["body"], hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(h["X-KVMM-Signature"], f"sha256={expected}")


async def test_signed_delivery_and_retry_with_backoff(manager, receiver):
    hooks = manager.webhooks
    hooks.base_delay = 0.01
    receiver.fail_first = 2
    made = hooks.create("kvmm-t-ops-hook", receiver.url, secret=SECRET)
    assert made["secret"] == SECRET and "secret" not in hooks.get("kvmm-t-ops-hook")

    ids = hooks.send("alert.firing", {"event": "alert.firing", "alert": {"id": 7}}, "warning")
    await hooks.wait()
    assert len(receiver.requests) == 3
    assert all(_valid(r) for r in receiver.requests)
    assert not _valid(receiver.requests[0], "another-secret-of-16+")
    last = receiver.requests[-1]
    assert json.loads(last["body"]) == {"event": "alert.firing", "alert": {"id": 7}}
    assert last["headers"]["X-KVMM-Event"] == "alert.firing"
    assert last["headers"]["X-KVMM-Delivery"] == str(ids[0])
    (delivery,) = hooks.deliveries("kvmm-t-ops-hook")
    assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == (
        "delivered",
        3,
        204,
    )


async def test_gives_up_after_max_attempts_and_filters_severity(manager, receiver):
    hooks = manager.webhooks
    hooks.base_delay, hooks.max_attempts = 0.01, 3
    receiver.fail_first = 100
    hooks.create("kvmm-t-ops-crit", receiver.url, secret=SECRET, min_severity="critical")
    assert hooks.send("alert.firing", {"n": 1}, "warning") == []
    hooks.send("alert.firing", {"n": 2}, "critical")
    await hooks.wait()
    assert len(receiver.requests) == 3
    (d,) = hooks.deliveries("kvmm-t-ops-crit")
    assert (d["state"], d["attempts"], d["last_error"]) == ("failed", 3, "HTTP 500")


async def test_unreachable_receiver_is_retried_then_failed(manager):
    hooks = manager.webhooks
    hooks.base_delay, hooks.max_attempts = 0.01, 2
    r = Receiver()
    url = r.url
    r.close()  # nothing listens there any more
    hooks.create("kvmm-t-ops-gone", url)
    hooks.ping("kvmm-t-ops-gone")
    await hooks.wait()
    (d,) = hooks.deliveries("kvmm-t-ops-gone")
    assert d["state"] == "failed" and d["attempts"] == 2 and "ConnectError" in d["last_error"]


async def test_bad_webhooks_name_the_field(manager):
    hooks = manager.webhooks
    for kwargs, field in [
        ({"name": "Bad Name", "url": "http://x"}, "name"),
        ({"name": "a", "url": "ftp://x"}, "url"),
        ({"name": "a", "url": "http://x", "secret": "short"}, "secret"),
        ({"name": "a", "url": "http://x", "min_severity": "panic"}, "min_severity"),
    ]:
        with pytest.raises(InvalidInput) as err:
            hooks.create(**kwargs)
        assert err.value.field == field
    hooks.create("kvmm-t-ops-dup", "http://127.0.0.1:9/")
    with pytest.raises(Conflict):
        hooks.create("kvmm-t-ops-dup", "http://127.0.0.1:9/")
