"""Alert e-mail through SMTP targets kept in the database (admin-managed).

Each firing or resolved alert reaching a target's minimum severity becomes one plain
text message to the target's recipients, sent in a worker thread (smtplib) and retried
a few times with backoff; a failure is logged and never delays the alert itself.

    manager.email.create(EmailSpec(name="ops", smtp_host="mail.example.org",
                                   from_addr="kvmm@example.org", to_addrs=["ops@example.org"]))
"""

from __future__ import annotations

import asyncio
import logging
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kvmmanager.core.config import OutboundSettings
from kvmmanager.core.errors import Conflict, InvalidInput, NotFound
from kvmmanager.db.ops_models import SEVERITIES, EmailTarget
from kvmmanager.services.alerts.outbound import OutboundPolicy, Unresolvable

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_ADDR_RE = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+$")
SECURITY = ("none", "starttls", "tls")
MAX_RECIPIENTS = 50


@dataclass
class EmailSpec:
    name: str
    smtp_host: str
    from_addr: str
    to_addrs: list[str] = field(default_factory=list)
    smtp_port: int = 587
    security: str = "starttls"
    username: str | None = None
    password: str | None = None
    min_severity: str = "warning"
    enabled: bool = True


def validate_email(spec: EmailSpec) -> EmailSpec:
    if not _NAME_RE.fullmatch(spec.name or ""):
        raise InvalidInput("name: lowercase letters, digits, '.', '_', '-'", field="name")
    if not spec.smtp_host or any(c in spec.smtp_host for c in " /@"):
        raise InvalidInput("smtp_host must be a host name or address", field="smtp_host")
    if not 1 <= spec.smtp_port <= 65535:
        raise InvalidInput("smtp_port must be 1..65535", field="smtp_port")
    if spec.security not in SECURITY:
        raise InvalidInput(f"security must be one of {', '.join(SECURITY)}", field="security")
    if not _ADDR_RE.fullmatch(spec.from_addr or ""):
        raise InvalidInput("from_addr must be an e-mail address", field="from_addr")
    if not spec.to_addrs or len(spec.to_addrs) > MAX_RECIPIENTS:
        raise InvalidInput(f"to_addrs: 1 to {MAX_RECIPIENTS} addresses", field="to_addrs")
    for addr in spec.to_addrs:
        if not _ADDR_RE.fullmatch(addr):
            raise InvalidInput(f"{addr!r} is not an e-mail address", field="to_addrs")
    if spec.min_severity not in SEVERITIES:
        raise InvalidInput(f"min_severity must be one of {SEVERITIES}", field="min_severity")
    if (spec.username is None) != (spec.password is None):
        raise InvalidInput("give both username and password, or neither", field="password")
    return spec


def _public(t: EmailTarget) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "smtp_host": t.smtp_host,
        "smtp_port": t.smtp_port,
        "security": t.security,
        "username": t.username,
        "from_addr": t.from_addr,
        "to_addrs": t.to_addrs,
        "min_severity": t.min_severity,
        "enabled": t.enabled,
        "created_at": t.created_at,
    }


def compose(kind: str, alert: dict[str, Any], from_addr: str, to: list[str]) -> EmailMessage:
    state = "FIRING" if kind == "alert.firing" else "resolved"
    where = "/".join(p for p in (alert.get("host"), alert.get("subject_name")) if p)
    msg = EmailMessage()
    msg["Subject"] = f"[kvm-manager] {alert.get('severity', '').upper()} {state}: " + (
        f"{alert.get('rule_name')} on {where}"
    )
    msg["From"], msg["To"] = from_addr, ", ".join(to)
    msg["Date"], msg["Message-ID"] = formatdate(localtime=False), make_msgid("kvmm")
    lines = [f"{k}: {alert.get(k)}" for k in (
        "rule_name", "metric", "severity", "host", "subject_name", "value", "message",
        "fired_at", "resolved_at",
    )]  # fmt: skip
    msg.set_content(f"Alert {state}\n\n" + "\n".join(lines) + "\n")
    return msg


class _PinnedSMTP(smtplib.SMTP):
    """SMTP to an address checked beforehand; the server is still greeted, and its
    certificate (STARTTLS) checked, as the host name the admin gave."""

    def __init__(self, address: str, timeout: float) -> None:
        self._address = address
        super().__init__(timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return super()._get_socket(self._address, port, timeout)


class _PinnedSMTPSSL(smtplib.SMTP_SSL):
    def __init__(self, address: str, timeout: float) -> None:
        self._address = address
        super().__init__(timeout=timeout, context=ssl.create_default_context())

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        raw = socket.create_connection((self._address, port), timeout)
        return self.context.wrap_socket(raw, server_hostname=host)


def _send_blocking(
    t: dict[str, Any], msg: EmailMessage, timeout: float, policy: OutboundPolicy
) -> None:
    # Resolved and checked at every send, then connected to the checked address: an
    # internal address is never reached, even by a name that rebinds (outbound.py).
    dest = policy.resolve(t["smtp_host"], t["smtp_port"], "smtp_host")
    smtp: smtplib.SMTP
    if t["security"] == "tls":
        smtp = _PinnedSMTPSSL(dest.address, timeout)
    else:
        smtp = _PinnedSMTP(dest.address, timeout)
    smtp.connect(dest.host, dest.port)
    with smtp:
        if t["security"] == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        if t["username"]:
            smtp.login(t["username"], t["password"])
        smtp.send_message(msg)


class EmailService:
    def __init__(self, db: sessionmaker[Session], outbound: OutboundSettings) -> None:
        self._db = db
        self._outbound = outbound
        self.attempts = 3
        self.base_delay = 5.0
        self.timeout = 20.0
        self._tasks: set[asyncio.Task[None]] = set()

    def policy(self) -> OutboundPolicy:
        return OutboundPolicy(self._outbound.allow_networks)

    def create(self, spec: EmailSpec) -> dict[str, Any]:
        spec = validate_email(spec)
        self.policy().check_at_creation(spec.smtp_host, spec.smtp_port, "smtp_host")
        with self._db.begin() as s:
            if s.scalar(select(EmailTarget.id).where(EmailTarget.name == spec.name)):
                raise Conflict(f"an e-mail target named '{spec.name}' already exists", field="name")
            row = EmailTarget(**vars(spec))
            s.add(row)
            s.flush()
            return _public(row)

    def _row(self, s: Any, ident: str | int) -> EmailTarget:
        text = str(ident)
        row = s.scalar(
            select(EmailTarget).where(
                EmailTarget.id == int(text)
                if (text.isdigit() and len(text) < 19)
                else EmailTarget.name == text
            )
        )
        if row is None:
            raise NotFound(f"e-mail target '{ident}' not found", field="target")
        return row

    def list(self) -> list[dict[str, Any]]:
        with self._db() as s:
            return [_public(t) for t in s.scalars(select(EmailTarget).order_by(EmailTarget.name))]

    def delete(self, ident: str | int) -> None:
        with self._db.begin() as s:
            s.delete(self._row(s, ident))

    def send(self, kind: str, alert: dict[str, Any], severity: str) -> int:
        """Mail `alert` to every enabled target it reaches; returns how many."""
        rank = SEVERITIES.index(severity) if severity in SEVERITIES else 0
        with self._db() as s:
            targets = [
                {**_public(t), "password": t.password}
                for t in s.scalars(select(EmailTarget).where(EmailTarget.enabled.is_(True)))
                if rank >= SEVERITIES.index(t.min_severity)
            ]
        for t in targets:
            msg = compose(kind, alert, t["from_addr"], t["to_addrs"])
            task = asyncio.get_running_loop().create_task(self._deliver(t, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(targets)

    async def test(self, ident: str | int) -> None:
        """Send a test message now; raises what the SMTP server answered."""
        with self._db() as s:
            row = self._row(s, ident)
            t = {**_public(row), "password": row.password}
        alert = {"rule_name": "test", "severity": "info", "message": "kvm-manager test e-mail"}
        msg = compose("alert.firing", alert, t["from_addr"], t["to_addrs"])
        try:
            await asyncio.to_thread(_send_blocking, t, msg, self.timeout, self.policy())
        except (OSError, smtplib.SMTPException) as exc:
            raise InvalidInput(f"sending failed: {exc}", field="smtp_host") from None

    async def wait(self) -> None:
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def aclose(self) -> None:
        for t in list(self._tasks):
            t.cancel()

    async def _deliver(self, t: dict[str, Any], msg: EmailMessage) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                await asyncio.to_thread(_send_blocking, t, msg, self.timeout, self.policy())
                return
            except InvalidInput as exc:
                if not isinstance(exc, Unresolvable):  # refused: nothing was sent, ever
                    log.warning("alert e-mail via %s refused: %s", t["name"], exc.message)
                    return
                log.warning("alert e-mail via %s failed (try %d): %s", t["name"], attempt, exc)
                if attempt < self.attempts:
                    await asyncio.sleep(self.base_delay * 2 ** (attempt - 1))
            except (OSError, smtplib.SMTPException) as exc:
                log.warning("alert e-mail via %s failed (try %d): %s", t["name"], attempt, exc)
                if attempt < self.attempts:
                    await asyncio.sleep(self.base_delay * 2 ** (attempt - 1))
