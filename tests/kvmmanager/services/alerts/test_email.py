"""Alert e-mail against a real (minimal, plain SMTP) local receiver in a thread: a firing
alert reaching the target's severity is mailed; lower severities are not."""

from __future__ import annotations

import email
import socketserver
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from kvmmanager.core.errors import InvalidInput
from kvmmanager.services.alerts.email import EmailSpec
from kvmmanager.services.alerts.service import RuleSpec

# Webhooks and e-mail here go to receivers on 127.0.0.1, an internal address refused by
# default (services/alerts/outbound.py): allow-listed explicitly.
pytestmark = pytest.mark.usefixtures("outbound_loopback")


class Smtp(socketserver.StreamRequestHandler):
    """Just enough of RFC 5321 for smtplib: EHLO, MAIL, RCPT, DATA, QUIT."""

    def handle(self) -> None:
        mail: dict[str, Any] = {"rcpt": []}
        self.wfile.write(b"220 kvmm-t-ops ESMTP\r\n")
        while line := self.rfile.readline():
            cmd = line.decode().strip()
            verb = cmd[:4].upper()
            if verb == "EHLO":
                self.wfile.write(b"250 kvmm-t-ops\r\n")
            elif verb == "MAIL":
                mail["from"] = cmd
                self.wfile.write(b"250 OK\r\n")
            elif verb == "RCPT":
                mail["rcpt"].append(cmd)
                self.wfile.write(b"250 OK\r\n")
            elif verb == "DATA":
                self.wfile.write(b"354 go on\r\n")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk
                mail["data"] = data
                self.server.mails.append(mail)  # type: ignore[attr-defined]
                mail = {"rcpt": []}
                self.wfile.write(b"250 queued\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 OK\r\n")


@pytest.fixture
def smtp() -> Iterator[Any]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Smtp)
    server.mails = []  # type: ignore[attr-defined]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


async def test_firing_alert_is_mailed(manager, smtp):
    port = smtp.server_address[1]
    manager.email.create(
        EmailSpec(name="kvmm-t-ops-mail", smtp_host="127.0.0.1", smtp_port=port,
                  security="none", from_addr="kvmm@example.org",
                  to_addrs=["ops@example.org", "oncall@example.org"], min_severity="critical")
    )  # fmt: skip
    alerts = manager.alerts
    alerts.create_rule(RuleSpec(name="kvmm-t-ops-warn", metric="cpu_pct", threshold=50))
    alerts.create_rule(RuleSpec(name="kvmm-t-ops-crit", metric="cpu_pct", threshold=90,
                                severity="critical"))  # fmt: skip
    alerts.evaluate("local", {"u1": {"name": "web1", "tags": [], "cpu_pct": 95.0}})
    await manager.email.wait()
    (mail,) = smtp.mails
    assert len(mail["rcpt"]) == 2
    msg = email.message_from_bytes(mail["data"])
    assert msg["Subject"] == "[kvm-manager] CRITICAL FIRING: kvmm-t-ops-crit on local/web1"
    assert "value: 95.0" in msg.get_payload()
    assert manager.email.list()[0]["to_addrs"] == ["ops@example.org", "oncall@example.org"]
    assert "password" not in manager.email.list()[0]
    await manager.email.test("kvmm-t-ops-mail")
    assert len(smtp.mails) == 2


async def test_bad_targets_name_the_field(manager):
    base = {"name": "kvmm-t-ops-m", "smtp_host": "mail.example.org", "from_addr": "a@b.c",
            "to_addrs": ["x@y.z"]}  # fmt: skip
    for kw, field in [
        ({"to_addrs": []}, "to_addrs"),
        ({"to_addrs": ["nobody"]}, "to_addrs"),
        ({"from_addr": "me"}, "from_addr"),
        ({"security": "ssl3"}, "security"),
        ({"smtp_port": 0}, "smtp_port"),
        ({"username": "u"}, "password"),
    ]:
        with pytest.raises(InvalidInput) as err:
            manager.email.create(EmailSpec(**{**base, **kw}))
        assert err.value.field == field
