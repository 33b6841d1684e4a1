"""Outgoing webhooks: alerts (and a test ping) POSTed as JSON, signed, retried.

Every request carries

    X-KVMM-Event: alert.firing | alert.resolved | ping
    X-KVMM-Delivery: <delivery id>
    X-KVMM-Timestamp: <unix seconds>
    X-KVMM-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

so a receiver checks the signature with the shared secret and refuses old timestamps
(replays). A delivery is a database row: a non-2xx answer or a network error is retried
with exponential backoff (base_delay * 2^n, capped) up to max_attempts; deliveries still
pending when the manager stops are resumed at the next start.

    hook = manager.webhooks.create("ops", "https://hooks.example.org/kvmm", min_severity="warning")
    hook["secret"]      # shown once, on creation
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import kvmmanager
from kvmmanager.core.config import OutboundSettings
from kvmmanager.core.errors import Conflict, InvalidInput, NotFound
from kvmmanager.db.models import utcnow
from kvmmanager.db.ops_models import SEVERITIES, Webhook, WebhookDelivery
from kvmmanager.services.alerts.outbound import Destination, OutboundPolicy, Unresolvable
from kvmmanager.services.fleet.lease import LeaseService

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MIN_SECRET = 16
MAX_DELAY = 300.0
MAX_ERROR_TEXT = 500


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _target(url: str) -> tuple[SplitResult, str, int]:
    """(parts, host name, port) of a webhook URL, or InvalidInput naming `url`."""
    try:
        parts = urlsplit(url or "")
        hostname, port = parts.hostname, parts.port
    except ValueError:
        raise InvalidInput("url is not a valid URL", field="url") from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise InvalidInput("url must be an http:// or https:// URL", field="url")
    return parts, hostname, port or (443 if parts.scheme == "https" else 80)


def _pinned(parts: SplitResult, dest: Destination) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL to the checked address, plus the Host header and TLS server name that keep
    the request addressed (and its certificate checked) as the name the admin gave."""
    address = f"[{dest.address}]" if ":" in dest.address else dest.address
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@" if userinfo else ""
    netloc += f"{address}:{dest.port}"
    host_header = parts.netloc.rpartition("@")[2]
    extensions: dict[str, Any] = {}
    if dest.host != dest.address:
        extensions["sni_hostname"] = dest.host
    return parts._replace(netloc=netloc).geturl(), {"Host": host_header}, extensions


def _public(w: Webhook) -> dict[str, Any]:
    return {
        "id": w.id,
        "name": w.name,
        "url": w.url,
        "min_severity": w.min_severity,
        "enabled": w.enabled,
        "created_at": w.created_at,
    }


def _delivery(d: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "webhook_id": d.webhook_id,
        "event": d.event,
        "state": d.state,
        "attempts": d.attempts,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": d.created_at,
        "delivered_at": d.delivered_at,
        "payload": d.payload,
    }


class WebhookService:
    def __init__(
        self, db: sessionmaker[Session], outbound: OutboundSettings, lease: LeaseService
    ) -> None:
        self._db = db
        self._outbound = outbound
        self._lease = lease
        self.base_delay = 2.0
        self.max_attempts = 6
        self.timeout = 10.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._inflight: set[int] = set()  # delivery ids being delivered by this instance

    # ---- configuration -----------------------------------------------------------------

    def policy(self) -> OutboundPolicy:
        return OutboundPolicy(self._outbound.allow_networks)

    def create(
        self,
        name: str,
        url: str,
        secret: str | None = None,
        min_severity: str = "info",
        enabled: bool = True,
    ) -> dict[str, Any]:
        if not _NAME_RE.fullmatch(name or ""):
            raise InvalidInput("name: lowercase letters, digits, '.', '_', '-'", field="name")
        _, hostname, port = _target(url)
        self.policy().check_at_creation(hostname, port, "url")
        if min_severity not in SEVERITIES:
            raise InvalidInput(f"min_severity must be one of {SEVERITIES}", field="min_severity")
        if secret is None:
            secret = secrets.token_urlsafe(32)
        elif len(secret) < MIN_SECRET:
            raise InvalidInput(f"secret must have at least {MIN_SECRET} characters", field="secret")
        with self._db.begin() as s:
            if s.scalar(select(Webhook.id).where(Webhook.name == name)) is not None:
                raise Conflict(f"a webhook named '{name}' already exists", field="name")
            row = Webhook(
                name=name, url=url, secret=secret, min_severity=min_severity, enabled=enabled
            )
            s.add(row)
            s.flush()
            return {**_public(row), "secret": secret}

    def _row(self, s: Any, ident: str | int) -> Webhook:
        text = str(ident)
        q = select(Webhook).where(
            Webhook.id == int(text) if (text.isdigit() and len(text) < 19) else Webhook.name == text
        )
        row = s.scalar(q)
        if row is None:
            raise NotFound(f"webhook '{ident}' not found", field="webhook")
        return row

    def list(self) -> list[dict[str, Any]]:
        with self._db() as s:
            return [_public(w) for w in s.scalars(select(Webhook).order_by(Webhook.name))]

    def get(self, ident: str | int) -> dict[str, Any]:
        with self._db() as s:
            return _public(self._row(s, ident))

    def set_enabled(self, ident: str | int, enabled: bool) -> dict[str, Any]:
        with self._db.begin() as s:
            row = self._row(s, ident)
            row.enabled = enabled
            return _public(row)

    def delete(self, ident: str | int) -> None:
        with self._db.begin() as s:
            s.delete(self._row(s, ident))

    def deliveries(self, ident: str | int, limit: int = 50) -> list[dict[str, Any]]:
        if not 1 <= limit <= 500:
            raise InvalidInput("limit must be 1..500", field="limit")
        with self._db() as s:
            row = self._row(s, ident)
            q = (
                select(WebhookDelivery)
                .where(WebhookDelivery.webhook_id == row.id)
                .order_by(WebhookDelivery.id.desc())
                .limit(limit)
            )
            return [_delivery(d) for d in s.scalars(q)]

    # ---- delivery ----------------------------------------------------------------------

    def start(self) -> None:
        """Resume deliveries a previous run left pending, on the instance that holds the
        singleton lease, when it gains it (two instances must not both resume them)."""
        if self._started:
            return
        self._started = True
        self._lease.on_change(self._lease_changed)
        if self._lease.held:
            self.resume_pending(self._pending_ids())

    async def _lease_changed(self, held: bool) -> None:
        if held:
            self.resume_pending(await asyncio.to_thread(self._pending_ids))

    def _pending_ids(self) -> builtins.list[int]:  # `list` is a method of this class
        with self._db() as s:
            return list(
                s.scalars(select(WebhookDelivery.id).where(WebhookDelivery.state == "pending"))
            )

    def resume_pending(self, ids: builtins.list[int]) -> None:
        """Deliver what is pending and not already in flight here (needs the running loop)."""
        for delivery_id in ids:
            if delivery_id not in self._inflight:
                self._spawn(delivery_id)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def send(self, event: str, payload: dict[str, Any], severity: str = "info") -> list[int]:
        """Queue `payload` to every enabled webhook whose minimum severity it reaches."""
        rank = SEVERITIES.index(severity) if severity in SEVERITIES else 0
        ids: list[int] = []
        with self._db.begin() as s:
            for w in s.scalars(select(Webhook).where(Webhook.enabled.is_(True))):
                if rank < SEVERITIES.index(w.min_severity):
                    continue
                d = WebhookDelivery(webhook_id=w.id, event=event, payload=payload)
                s.add(d)
                s.flush()
                ids.append(d.id)
        for delivery_id in ids:
            self._spawn(delivery_id)
        return ids

    def ping(self, ident: str | int) -> int:
        """Queue a test delivery to one webhook (whatever its minimum severity)."""
        with self._db.begin() as s:
            w = self._row(s, ident)
            d = WebhookDelivery(
                webhook_id=w.id,
                event="ping",
                payload={"event": "ping", "webhook": w.name, "ts": time.time()},
            )
            s.add(d)
            s.flush()
            delivery_id = d.id
        self._spawn(delivery_id)
        return delivery_id

    async def wait(self) -> None:
        """Wait until no delivery is in flight (tests)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def _spawn(self, delivery_id: int) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(delivery_id))
        self._tasks.add(task)
        self._inflight.add(delivery_id)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _t: self._inflight.discard(delivery_id))

    def _load(self, delivery_id: int) -> tuple[Webhook, WebhookDelivery] | None:
        with self._db() as s:
            d = s.get(WebhookDelivery, delivery_id)
            w = s.get(Webhook, d.webhook_id) if d is not None else None
            if d is None or w is None or d.state != "pending":
                return None
            return w, d

    def _update(self, delivery_id: int, **values: Any) -> None:
        with self._db.begin() as s:
            d = s.get(WebhookDelivery, delivery_id)
            if d is not None:
                for k, v in values.items():
                    setattr(d, k, v)

    async def _deliver(self, delivery_id: int) -> None:
        loaded = await asyncio.to_thread(self._load, delivery_id)
        if loaded is None:
            return
        hook, d = loaded
        body = json.dumps(d.payload, default=str, separators=(",", ":")).encode()
        attempts = d.attempts
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as http:
            while attempts < self.max_attempts:
                ts = str(int(time.time()))
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": f"kvm-manager/{kvmmanager.__version__}",
                    "X-KVMM-Event": d.event,
                    "X-KVMM-Delivery": str(d.id),
                    "X-KVMM-Timestamp": ts,
                    "X-KVMM-Signature": sign(hook.secret, ts, body),
                }
                attempts += 1
                status, error = None, ""
                try:
                    parts, hostname, port = _target(hook.url)
                    # Resolved and checked at every attempt, then connected to the checked
                    # address: an internal address is never reached, even by rebinding.
                    dest = await asyncio.to_thread(self.policy().resolve, hostname, port, "url")
                    url, host_header, extensions = _pinned(parts, dest)
                    r = await http.post(
                        url,
                        content=body,
                        headers={**headers, **host_header},
                        extensions=extensions,
                    )
                    status = r.status_code
                    if 200 <= status < 300:
                        await asyncio.to_thread(
                            self._update, d.id, state="delivered", attempts=attempts,
                            last_status=status, last_error="", delivered_at=utcnow(),
                        )  # fmt: skip
                        return
                    error = f"HTTP {status}"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_TEXT]
                except Unresolvable as exc:
                    error = exc.message[:MAX_ERROR_TEXT]  # DNS may answer later: retried
                except InvalidInput as exc:
                    # A refused address: retrying cannot help, and nothing was sent.
                    await asyncio.to_thread(
                        self._update, d.id, attempts=attempts, last_status=None,
                        last_error=exc.message[:MAX_ERROR_TEXT], state="failed",
                    )  # fmt: skip
                    log.warning("webhook %s: delivery %s refused: %s", hook.name, d.id, exc)
                    return
                final = attempts >= self.max_attempts
                await asyncio.to_thread(
                    self._update, d.id, attempts=attempts, last_status=status,
                    last_error=error, state="failed" if final else "pending",
                )  # fmt: skip
                if final:
                    log.warning("webhook %s: delivery %s failed: %s", hook.name, d.id, error)
                    return
                await asyncio.sleep(min(MAX_DELAY, self.base_delay * 2 ** (attempts - 1)))
