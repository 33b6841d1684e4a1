"""ASGI middleware that audits every state-changing request, whatever router serves it.

It gives each request an id, keeps a copy of small JSON bodies for the entry's params
(secrets redacted on write), sees the final status and error code, and writes one entry
per POST/PUT/PATCH/DELETE. The app-wide `authenticate` dependency fills in who and which
route; a job started by the request writes the entry earlier, in the job's transaction.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import anyio.to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kvmmanager.api.deps import WRITE_METHODS, route_action
from kvmmanager.services.users import audit as audit_mod
from kvmmanager.services.users.audit import AuditRecord

log = logging.getLogger(__name__)

MAX_RECORDED_BODY = 64 * 1024
MAX_ERROR_BODY = 64 * 1024
# A failed request without a user keeps at most this much of its body and query: enough
# for a login's user name, not enough to fill the disk (services/users/audit_budget.py).
MAX_ANONYMOUS_PARAMS = 1024


class AuditMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["request_id"] = uuid.uuid4().hex[:16]
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope.get("client")
        content_type = headers.get("content-type", "")
        rec = AuditRecord(
            action=f"http.{scope['method'].lower()}",
            target=scope["path"],
            remote_addr=client[0] if client else None,
            query=_query_params(scope),
            body_is_json=content_type.startswith("application/json"),
            body_is_form=content_type.startswith("application/x-www-form-urlencoded"),
        )
        status = 500
        error_json = bytearray()
        error_is_json = False
        written = False

        async def receive_wrapper() -> Message:
            message = await receive()
            if (
                message["type"] == "http.request"
                and (rec.body_is_json or rec.body_is_form)
                and not rec.body_truncated
            ):
                chunk = message.get("body", b"")
                if len(rec.body) + len(chunk) > MAX_RECORDED_BODY:
                    rec.body_truncated = True
                    rec.body.clear()
                else:
                    rec.body.extend(chunk)
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status, error_is_json, written
            if message["type"] == "http.response.start":
                status = message["status"]
                for k, v in message.get("headers", []):
                    if k.lower() == b"content-type" and v.startswith(b"application/json"):
                        error_is_json = True
            elif message["type"] == "http.response.body":
                if status >= 400 and error_is_json and len(error_json) < MAX_ERROR_BODY:
                    error_json.extend(message.get("body", b""))
                if not message.get("more_body", False) and not written:
                    # Before the last byte goes out: a client that reads the audit log
                    # right after its write always finds the entry.
                    written = True
                    _finish(rec, scope, status, bytes(error_json))
                    await _write(scope, rec)
            await send(message)

        token = audit_mod.current_request.set(rec)
        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception:
            status = 500
            rec.error_code = "internal_error"
            raise
        finally:
            audit_mod.current_request.reset(token)
            if not written:
                _finish(rec, scope, status, bytes(error_json))
                await _write(scope, rec)


def _query_params(scope: Scope) -> dict[str, Any]:
    from urllib.parse import parse_qsl

    raw = scope.get("query_string", b"").decode("latin-1")
    return dict(parse_qsl(raw, keep_blank_values=True))


def _anonymous_failure(scope: Scope, rec: AuditRecord) -> bool:
    """A refused or failed request by a client that did not authenticate (`authenticate`
    keeps the caller in the request state; a failed login has none either)."""
    principal = scope.get("state", {}).get("principal")
    return principal is None and (rec.status is None or rec.status >= 400)


def _truncate(rec: AuditRecord) -> None:
    if len(rec.body) > MAX_ANONYMOUS_PARAMS:
        rec.body_truncated = True
        rec.body.clear()
    if len(json.dumps(rec.query, default=str)) > MAX_ANONYMOUS_PARAMS:
        rec.query = {"query": "(too large to record)"}


def _finish(rec: AuditRecord, scope: Scope, status: int, error_json: bytes) -> None:
    route = scope.get("route")
    if route is not None and rec.action.startswith("http."):
        rec.action = route_action(route)
        rec.target = "/".join(str(v) for v in scope.get("path_params", {}).values())
    rec.status = status
    # A page that refused a form answers it itself (a 422 with the form and its errors).
    rec.result = "ok" if status < 400 and rec.reason is None else "error"
    if status >= 400 and rec.error_code is None:
        try:
            error = json.loads(error_json)["error"]
            rec.error_code = str(error["code"])
            rec.reason = rec.reason or str(error.get("message") or "") or None
        except (ValueError, KeyError, TypeError, AttributeError):
            rec.error_code = f"http_{status}"


async def _write(scope: Scope, rec: AuditRecord) -> None:
    manager = getattr(scope["app"].state, "manager", None)
    if manager is None:
        return
    if rec.entry_id is None and _anonymous_failure(scope, rec):
        if not manager.audit.anonymous_budget.admit(rec.remote_addr or ""):
            return  # counted; one summary entry per address and minute says how many
        _truncate(rec)
    try:
        if rec.entry_id is not None:
            await anyio.to_thread.run_sync(
                lambda: manager.audit.update_outcome(
                    rec.entry_id,
                    result=rec.result,
                    status=rec.status,
                    error_code=rec.error_code,
                    reason=rec.shown_reason(),
                )
            )
        else:
            await anyio.to_thread.run_sync(manager.audit.record, rec)
    except Exception:
        # Losing an audit entry must be loud, but must not turn a done action into an error.
        log.exception("could not write the audit entry for %s %s", rec.action, rec.target)
