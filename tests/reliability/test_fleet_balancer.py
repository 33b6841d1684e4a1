"""Two manager instances on one PostgreSQL database behind the documented HAProxy example
(contrib/haproxy/kvm-manager.cfg; issue 16 item 3): a logged-in session, a browser cookie
session with its CSRF token and an API token, keeps working while the instance that served
its login is killed with SIGKILL. Requests may fail only until HAProxy has taken the dead
instance out (its health check on /api/health); every request sent after that succeeds,
on the survivor. How many failed and for how long is printed as a figure, not asserted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.postgres_cluster import shared_cluster
from tests.reliability.balancer import HAProxy, start_instances
from tests.reliability.conftest import ServerProcess

WAIT = 60.0


@pytest.fixture
def balanced(tmp_path: Path) -> Iterator[tuple[HAProxy, dict[str, ServerProcess]]]:
    instances = start_instances(tmp_path, shared_cluster().new_database(), ["a", "b"])
    lb = None
    try:
        lb = HAProxy(tmp_path, {name: srv.port for name, srv in instances.items()})
        lb.wait_all_up()
        yield lb, instances
    finally:
        if lb is not None:
            lb.stop()
        for srv in instances.values():
            srv.stop()


@dataclass(frozen=True)
class Sent:
    what: str
    started: float
    ended: float
    ok: bool
    outcome: str  # the status code, or the transport error
    served_by: str


class Session:
    """A browser-like cookie session and an API token, logged in through the balancer."""

    def __init__(self, lb: HAProxy, password: str) -> None:
        self.browser = httpx.Client(base_url=lb.url, timeout=30)
        r = self.browser.post("/api/auth/login", json={"username": "admin", "password": password})
        r.raise_for_status()
        self.login_served_by = r.headers["X-Served-By"]
        r = self.browser.post(
            "/api/auth/password",
            json={"current_password": password, "new_password": password + "-changed"},
            headers={"X-CSRF-Token": r.json()["csrf_token"]},
        )
        r.raise_for_status()
        self.csrf = r.json()["csrf_token"]
        r = self.browser.post(
            "/api/tokens", json={"name": "kvmm-t-lb-token"}, headers={"X-CSRF-Token": self.csrf}
        )
        r.raise_for_status()
        self.api = httpx.Client(
            base_url=lb.url, timeout=30, headers={"Authorization": f"Bearer {r.json()['token']}"}
        )
        self.sent: list[Sent] = []
        self._n = 0

    def one_of_each(self) -> None:
        """A REST read by cookie and by token, a write by cookie with CSRF, a web page."""
        self._n += 1
        self._send("cookie GET /api/vms", lambda: self.browser.get("/api/vms"))
        self._send("token GET /api/vms", lambda: self.api.get("/api/vms"))
        self._send(
            "cookie POST /api/tokens",
            lambda: self.browser.post(
                "/api/tokens",
                json={"name": f"kvmm-t-lb-{self._n}"},
                headers={"X-CSRF-Token": self.csrf},
            ),
        )
        self._send("cookie GET /vms (page)", lambda: self.browser.get("/vms"))

    def _send(self, what: str, call: object) -> None:
        t0 = time.monotonic()
        try:
            r = call()  # type: ignore[operator]
        except httpx.HTTPError as e:
            self.sent.append(Sent(what, t0, time.monotonic(), False, repr(e), ""))
            return
        ok = r.status_code in (200, 201)
        served_by = r.headers.get("X-Served-By", "")
        self.sent.append(Sent(what, t0, time.monotonic(), ok, str(r.status_code), served_by))

    def close(self) -> None:
        self.browser.close()
        self.api.close()


@pytest.mark.slow
def test_a_session_through_haproxy_survives_kill_9_of_the_instance_that_served_it(
    balanced: tuple[HAProxy, dict[str, ServerProcess]], figures: dict[str, object]
) -> None:
    lb, instances = balanced
    first = instances["a"]
    password = (Path(first.env["KVMM_DATA_DIR"]) / "initial-admin-password").read_text().strip()
    session = Session(lb, password)
    victim_name = session.login_served_by
    (survivor_name,) = set(instances) - {victim_name}
    victim = instances[victim_name]

    stop = threading.Event()
    load = threading.Thread(
        target=lambda: [session.one_of_each() for _ in iter(stop.is_set, True)],
        name="kvmm-t-lb-load",
        daemon=True,
    )
    load.start()
    try:
        # Both instances answer the session before the kill (round robin).
        deadline = time.monotonic() + WAIT
        while {s.served_by for s in list(session.sent) if s.ok} != set(instances):
            assert time.monotonic() < deadline, session.sent
            time.sleep(0.05)
        assert all(s.ok for s in session.sent), [s for s in session.sent if not s.ok]

        victim.kill()
        killed_at = time.monotonic()
        while lb.states()[victim_name] == "UP":
            assert time.monotonic() < killed_at + WAIT, "HAProxy never took the dead one out"
            time.sleep(0.02)
        down_at = time.monotonic()
        # Every kind of request, several times, sent after HAProxy knew.
        while sum(1 for s in list(session.sent) if s.started > down_at) < 4 * 5:
            assert time.monotonic() < down_at + WAIT, "the load stalled"
            time.sleep(0.05)
    finally:
        stop.set()
        load.join(WAIT)
        session.close()

    after = [s for s in session.sent if s.started > down_at]
    failed = [s for s in session.sent if not s.ok]
    # Nothing sent once the balancer knew failed, and the survivor served all of it: the
    # session (cookie + CSRF) and the token are rows of the shared database.
    assert all(s.ok and s.served_by == survivor_name for s in after), after
    assert {s.what for s in after} == {
        "cookie GET /api/vms",
        "token GET /api/vms",
        "cookie POST /api/tokens",
        "cookie GET /vms (page)",
    }
    # Whatever failed had been sent before HAProxy took the dead instance out.
    assert all(s.started < down_at for s in failed), failed
    window = max((s.ended for s in failed), default=killed_at) - killed_at
    figures.update(
        balancer_detect_s=round(down_at - killed_at, 2),
        failed_requests=len(failed),
        failed_kinds=sorted({f"{s.what}: {s.outcome}" for s in failed}),
        failure_window_s=round(window, 2),
        requests=len(session.sent),
    )
