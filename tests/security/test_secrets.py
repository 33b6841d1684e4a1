"""Issue 9 item 8: passwords and tokens never appear in logs, audit parameters or error
messages; VNC passwords are not exposed to viewers; the database file is private.

One representative flow runs against the real app under uvicorn (access log on) while
EVERY logger is captured at DEBUG (uvicorn's access and error logs, SQLAlchemy's engine
log, httpx, ours): logins with right and wrong passwords, a user created with a password
which then changes it and is reset by the admin, tokens created, used, revoked and
replayed, a webhook with a secret (pinged), an SMTP target with a password (tested
against a closed port). Then every captured log line, every audit row (all columns,
straight from the database) and every response body is searched for each secret.
"""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import libvirt
import pytest

from kvmmanager.core.config import Settings

# Webhooks and e-mail here go to receivers on 127.0.0.1, an internal address refused by
# default (services/alerts/outbound.py): allow-listed explicitly.
pytestmark = pytest.mark.usefixtures("outbound_loopback")

ADMIN_TOKEN_NAME = "kvmm-t-sec-secrets"


class Capture(logging.Handler):
    """Every record, as its formatted line plus its raw parts (args, traceback)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.threadName == "MainThread" and record.name.startswith(("httpx", "httpcore")):
            return  # this test's own HTTP client (it receives the cookies and tokens)
        self.lines.append(self.format(record))
        self.lines.append(repr(record.args))
        self.lines.append(repr(record.msg))


@pytest.fixture
def capture() -> Iterator[Capture]:
    import kvmmanager.web.app  # noqa: F401  (every library's loggers exist now: sqlalchemy
    # sets its own to WARNING on import, and that must be undone below)

    handler = Capture()
    root = logging.getLogger()
    # Every logger at DEBUG, including ones that were set quieter explicitly.
    levels = {name: lg.level for name, lg in logging.root.manager.loggerDict.items()
              if isinstance(lg, logging.Logger)}  # fmt: skip
    old_root = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in levels:
        logging.getLogger(name).setLevel(logging.NOTSET)
    # Loggers that do not propagate (uvicorn's, once any server configured them) get
    # the handler themselves.
    isolated = [logging.getLogger(n) for n in levels if not logging.getLogger(n).propagate]
    for lg in isolated:
        lg.addHandler(handler)
    try:
        yield handler
    finally:
        for lg in isolated:
            lg.removeHandler(handler)
        root.removeHandler(handler)
        root.setLevel(old_root)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture
def server(settings: Settings, capture: Capture) -> Iterator[tuple[str, Any]]:
    """The app under uvicorn with its access log, logging through the root logger."""
    import uvicorn

    from kvmmanager.web.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, log_level="trace", access_log=True
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, name="kvmm-t-sec-secrets", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        srv.should_exit = True
        thread.join(60)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when we return


def test_no_secret_in_logs_audit_or_errors(
    server: tuple[str, Any], settings: Settings, capture: Capture
) -> None:
    url, _app = server
    responses: list[tuple[str, str, int, str]] = []

    def record(r: httpx.Response) -> None:
        r.read()
        responses.append((r.request.method, r.request.url.path, r.status_code, r.text))

    hooks = {"response": [record]}
    admin_pw = (settings.data_dir / "initial-admin-password").read_text().strip()
    admin_pw2 = "kvmm-SECRET-admin-pw2-e81c07"
    user_pw = "kvmm-SECRET-user-pw-4f1d9a2c"
    user_pw2 = "kvmm-SECRET-user-pw2-77e0b1"
    reset_pw = "kvmm-SECRET-reset-pw-0c93aa"
    wrong_pw = "kvmm-SECRET-wrong-pw-5b7e2d"
    hook_secret = "kvmm-SECRET-webhook-9d41c6e8"
    smtp_pw = "kvmm-SECRET-smtp-pw-3a8f5e"
    secrets = {admin_pw, admin_pw2, user_pw, user_pw2, reset_pw, wrong_pw, hook_secret, smtp_pw}
    # Made by the server and handed out once: the admin's API token, the user's token,
    # session cookies. The responses that hand them out are the only allowed places.
    allowed_once: set[tuple[str, str]] = {("POST", "/api/tokens"), ("POST", "/api/webhooks")}

    with httpx.Client(base_url=url, timeout=60, event_hooks=hooks) as anon:
        assert (
            anon.post(
                "/api/auth/login", json={"username": "admin", "password": wrong_pw}
            ).status_code
            == 401
        )
        r = anon.post("/api/auth/login", json={"username": "admin", "password": admin_pw})
        assert r.status_code == 200, r.text
        csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
        # The generated first password is changed before anything else.
        assert r.json()["password_change_required"] is True
        r = anon.post(
            "/api/auth/password",
            json={"current_password": admin_pw, "new_password": admin_pw2},
            headers=csrf,
        )
        assert r.status_code == 200, r.text
        csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
        secrets.add(anon.cookies.get("kvmm_session") or next(iter(anon.cookies.values())))
        r = anon.post("/api/tokens", json={"name": ADMIN_TOKEN_NAME}, headers=csrf)
        assert r.status_code == 201, r.text
        admin_token = r.json()["token"]
        secrets.add(admin_token)

    auth = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=url, timeout=60, headers=auth, event_hooks=hooks) as admin:
        # A too-short password (7 characters) is refused without being echoed.
        short = "kS3cr7!"
        secrets.add(short)
        body = {"username": "kvmm-t-sec-alice", "password": short, "role": "operator"}
        r = admin.post("/api/users", json=body)
        assert r.status_code == 422 and r.json()["error"]["field"] == "password", r.text
        r = admin.post(
            "/api/users",
            json={"username": "kvmm-t-sec-alice", "password": user_pw, "role": "operator"},
        )
        assert r.status_code == 201, r.text
        # Webhook secret and SMTP password, used (a ping to nowhere, a test mail to a
        # closed port: both fail, and their errors are logged and returned).
        dead = f"http://127.0.0.1:{_closed_port()}/hook"
        r = admin.post(
            "/api/webhooks", json={"name": "kvmm-t-sec-hook", "url": dead, "secret": hook_secret}
        )
        assert r.status_code == 201, r.text
        assert admin.post("/api/webhooks/kvmm-t-sec-hook/ping").status_code == 200
        r = admin.post("/api/email-targets", json={
            "name": "kvmm-t-sec-mail", "smtp_host": "127.0.0.1", "smtp_port": _closed_port(),
            "security": "none", "username": "mailer", "password": smtp_pw,
            "from_addr": "kvm@example.com", "to_addrs": ["ops@example.com"],
        })  # fmt: skip
        assert r.status_code == 201, r.text
        assert admin.post("/api/email-targets/kvmm-t-sec-mail/test").status_code >= 400
        for path in ("/api/webhooks", "/api/email-targets"):
            assert admin.get(path).status_code == 200
        deadline = time.monotonic() + 30
        while not admin.get("/api/webhooks/kvmm-t-sec-hook/deliveries").json():
            assert time.monotonic() < deadline, "the ping was never attempted"
            time.sleep(0.1)

    with httpx.Client(base_url=url, timeout=60, event_hooks=hooks) as alice:
        body = {"username": "kvmm-t-sec-alice", "password": wrong_pw}
        assert alice.post("/api/auth/login", json=body).status_code == 401
        body["password"] = user_pw
        r = alice.post("/api/auth/login", json=body)
        assert r.status_code == 200, r.text
        secrets.add(alice.cookies.get("kvmm_session") or next(iter(alice.cookies.values())))
        csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
        r = alice.post("/api/auth/password", headers=csrf,
                       json={"current_password": wrong_pw, "new_password": user_pw2})  # fmt: skip
        assert r.status_code == 422
        r = alice.post("/api/auth/password", headers=csrf,
                       json={"current_password": user_pw, "new_password": user_pw2})  # fmt: skip
        assert r.status_code == 200, r.text
        csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
        r = alice.post("/api/tokens", json={"name": "kvmm-t-sec-alice-token"}, headers=csrf)
        assert r.status_code == 201, r.text
        alice_token, alice_token_id = r.json()["token"], r.json()["id"]
        secrets.add(alice_token)

    bearer = {"Authorization": f"Bearer {alice_token}"}
    with httpx.Client(base_url=url, timeout=60, headers=bearer, event_hooks=hooks) as api:
        assert api.get("/api/auth/me").status_code == 200
        assert api.get("/api/vms").status_code == 200
        assert api.delete(f"/api/tokens/{alice_token_id}").status_code == 204
        assert api.get("/api/auth/me").status_code == 401  # replayed after revocation
        forged = alice_token[:-4] + "abcd"
        secrets.add(forged)
        assert api.get("/api/vms", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    with httpx.Client(base_url=url, timeout=60, headers=auth, event_hooks=hooks) as admin:
        r = admin.patch("/api/users/kvmm-t-sec-alice", json={"password": reset_pw})
        assert r.status_code == 200, r.text
        audit = admin.get("/api/audit", params={"limit": 500})
        assert audit.status_code == 200
        admin.delete("/api/webhooks/kvmm-t-sec-hook")
        admin.delete("/api/email-targets/kvmm-t-sec-mail")
        admin.delete("/api/users/kvmm-t-sec-alice")

    # Every audit row, every column, from the database itself.
    db = sqlite3.connect(settings.data_dir / "kvm-manager.db")
    try:
        rows = [json.dumps(row, default=str) for row in db.execute("SELECT * FROM audit_log")]
    finally:
        db.close()
    assert len(rows) >= 15, rows  # the flow's writes were audited
    assert any("kvmm-t-sec-alice" in row for row in rows)

    logs = capture.lines
    assert any("uvicorn.access" in line for line in logs)  # the access log was captured
    assert any("sqlalchemy.engine" in line for line in logs)  # so was SQL at DEBUG
    leaks = []
    for secret in sorted(secrets):
        leaks += [f"log: {line[:300]}" for line in logs if secret in line]
        leaks += [f"audit row: {row[:300]}" for row in rows if secret in row]
        leaks += [
            f"{method} {path} -> {status}: {text[:300]}"
            for method, path, status, text in responses
            if secret in text and not (status < 400 and (method, path) in allowed_once)
        ]
    assert not leaks, "\n".join(leaks)
    assert audit.json()["items"], audit.text


def test_vnc_password_is_not_exposed_to_viewers(client: Any, client_as: Any) -> None:
    """The VNC password libvirt holds (VIR_DOMAIN_XML_SECURE) appears in no answer a
    viewer gets about the VM: list, detail, both XMLs, events page, the VM's web page."""
    name = f"kvmm-t-sec-vnc-{int(time.monotonic_ns()) % 10**8}"
    r = client.post("/api/hosts/local/vms", json={"name": name, "memory_mib": 64})
    assert r.status_code == 201, r.text
    try:
        conn = libvirt.open("test:///default")
        try:
            secure = conn.lookupByName(name).XMLDesc(
                libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_INACTIVE
            )
        finally:
            conn.close()
        start = secure.index("passwd='") + len("passwd='")
        password = secure[start : secure.index("'", start)]
        assert len(password) >= 8
        viewer = client_as("viewer")
        base = f"/api/hosts/local/vms/{name}"
        paths = ["/api/vms", "/api/hosts/local/vms", base, f"{base}/xml",
                 f"{base}/xml?inactive=true", f"/vms/local/{name}"]  # fmt: skip
        for path in paths:
            r = viewer.get(path)
            assert r.status_code == 200, (path, r.status_code)
            assert password not in r.text, path
            assert "passwd" not in r.text, path
    finally:
        client.delete(f"/api/hosts/local/vms/{name}")


def test_database_and_data_dir_are_private(client: Any, settings: Settings) -> None:
    db = settings.data_dir / "kvm-manager.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o700
    pw = settings.data_dir / "initial-admin-password"
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600
