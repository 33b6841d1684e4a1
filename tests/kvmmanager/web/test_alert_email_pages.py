"""The alerts page's e-mail section (admin only): SMTP settings listed without their
password, targets added with field errors, a test e-mail sent to a local SMTP receiver
(and a failing one reported), targets deleted; other roles neither see nor reach it."""

from __future__ import annotations

import re
import socket
from typing import Any

import pytest
from tests.kvmmanager.services.alerts.test_email import smtp  # noqa: F401 (fixture)
from tests.kvmmanager.web.test_ops_pages import field_error, hx

# Webhooks and e-mail here go to receivers on 127.0.0.1, an internal address refused by
# default (services/alerts/outbound.py): allow-listed explicitly.
pytestmark = pytest.mark.usefixtures("outbound_loopback")

BASE = {
    "name": "kvmm-t-mail",
    "smtp_host": "127.0.0.1",
    "smtp_port": "25",
    "security": "none",
    "from_addr": "kvmm@example.org",
    "to_addrs": "ops@example.org,\nboss@example.org",
    "min_severity": "warning",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_admin_adds_tests_and_deletes_an_email_target(web_as: Any, smtp: Any) -> None:  # noqa: F811
    c = web_as("admin")
    m = c.app.state.manager
    assert 'id="email-targets"' in c.get("/alerts").text
    port = str(smtp.server_address[1])
    bad = {
        "name": ({"name": "Has Space"}, "lowercase"),
        "smtp_host": ({"smtp_host": "a b"}, "host name"),
        "smtp_port": ({"smtp_port": "70000"}, "1..65535"),
        "from_addr": ({"from_addr": "nobody"}, "e-mail address"),
        "to_addrs": ({"to_addrs": "ops@example.org, not-an-address"}, "not-an-address"),
        "password": ({"username": "kvmm"}, "both username and password"),
    }
    for field, (change, words) in bad.items():
        r = c.post("/alerts/email", data={**BASE, **change}, headers=hx(c))
        assert r.status_code == 422, (field, r.text[:300])
        assert words in field_error(r.text, field), field
    assert m.email.list() == []
    try:
        r = c.post(
            "/alerts/email",
            data={**BASE, "smtp_port": port, "username": "kvmm-user", "password": "s3cret-pw"},
            headers=hx(c),
        )
        assert r.status_code == 200, r.text[:300]
        row = re.search(r'<tr id="email-kvmm-t-mail">.*?</tr>', r.text, re.S).group(0)
        assert f"127.0.0.1:{port}" in row and "kvmm-user" in row and "(password set)" in row
        assert "ops@example.org, boss@example.org" in row
        page = c.get("/alerts").text
        assert "s3cret-pw" not in page and "s3cret-pw" not in r.text
        (t,) = m.email.list()
        assert t["to_addrs"] == ["ops@example.org", "boss@example.org"]

        # The receiver asks for no login: the target without one is the one to test-send.
        c.post("/alerts/email/kvmm-t-mail/delete", headers=hx(c))
        c.post("/alerts/email", data={**BASE, "smtp_port": port}, headers=hx(c))
        r = c.post("/alerts/email/kvmm-t-mail/test", headers=hx(c))
        assert r.status_code == 200
        assert "Test e-mail sent through kvmm-t-mail" in r.text
        (mail,) = smtp.mails
        assert [r.lower() for r in mail["rcpt"]] == [
            "rcpt to:<ops@example.org>",
            "rcpt to:<boss@example.org>",
        ]
        assert b"kvm-manager test e-mail" in mail["data"]

        # Nothing listens on this port: the failure is shown with the server's reason.
        c.post(
            "/alerts/email",
            data={**BASE, "name": "kvmm-t-mail-dead", "smtp_port": str(_free_port())},
            headers=hx(c),
        )
        r = c.post("/alerts/email/kvmm-t-mail-dead/test", headers=hx(c))
        assert r.status_code == 200
        shown = re.search(r'id="email-test-result">([^<]*)<', r.text).group(1)
        assert "failed: sending failed" in shown and "refused" in shown.lower()
        assert '"level": "error"' in r.headers["hx-trigger"]

        r = c.post("/alerts/email", data={**BASE, "smtp_port": port}, headers=hx(c))
        assert r.status_code == 422 and "already exists" in field_error(r.text, "name")
        assert c.post("/alerts/email/kvmm-t-nope/test", headers=hx(c)).status_code == 404
    finally:
        for t in m.email.list():
            c.post(f"/alerts/email/{t['name']}/delete", headers=hx(c))
    assert m.email.list() == []


def test_email_section_is_admin_only(web_as: Any) -> None:
    admin = web_as("admin")
    admin.post("/alerts/email", data=BASE, headers=hx(admin))
    try:
        for role in ("viewer", "operator"):
            c = web_as(role)
            page = c.get("/alerts").text
            assert 'id="email-targets"' not in page and "kvmm-t-mail" not in page
            assert c.post("/alerts/email", data=BASE, headers=hx(c)).status_code == 403
            r = c.post("/alerts/email/kvmm-t-mail/test", headers=hx(c))
            assert r.status_code == 403
            r = c.post("/alerts/email/kvmm-t-mail/delete", headers=hx(c))
            assert r.status_code == 403
        assert admin.post("/alerts/email/kvmm-t-mail/delete").status_code == 403  # no CSRF
    finally:
        admin.post("/alerts/email/kvmm-t-mail/delete", headers=hx(admin))
    assert admin.app.state.manager.email.list() == []
