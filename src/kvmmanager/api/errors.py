"""One JSON error shape for every failure: `{"error": {"code", "message", "field"?}}`.

KvmmError keeps its own status; pydantic validation becomes 422 naming the field (dotted
location); unknown routes and methods keep their status in the same shape; anything
unexpected is a 500 `internal_error` logged with the request id, never leaking details.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from kvmmanager.core.errors import KvmmError

log = logging.getLogger("kvmmanager.api")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
}
_LOCATION_ROOTS = {"body", "query", "path", "header", "cookie"}


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        err["field"] = field
    err.update(extra)
    return {"error": err}


def request_id(conn: HTTPConnection) -> str:
    rid = getattr(conn.state, "request_id", None)
    if rid is None:
        rid = uuid.uuid4().hex[:16]
        conn.state.request_id = rid
    return rid


def field_from_loc(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = list(loc)
    if parts and parts[0] in _LOCATION_ROOTS:
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or None


async def _respond(
    conn: HTTPConnection,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> JSONResponse | None:
    response = JSONResponse(body, status_code=status, headers=headers)
    if isinstance(conn, WebSocket):
        # Before accept, answer with a real HTTP status where the server supports it
        # (ASGI websocket.http.response); otherwise close with "policy violation".
        if "websocket.http.response" in conn.scope.get("extensions", {}):
            await conn.send_denial_response(response)
        else:
            await conn.close(code=1008 if status in (401, 403) else 1011)
        return None
    return response


async def kvmm_error_handler(conn: HTTPConnection, exc: Exception) -> JSONResponse | None:
    assert isinstance(exc, KvmmError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if exc.status == 429 and isinstance(exc.details, dict) and "retry_after" in exc.details:
        headers = {"Retry-After": str(exc.details["retry_after"])}
    return await _respond(conn, exc.status, {"error": exc.to_dict()}, headers)


async def validation_error_handler(conn: HTTPConnection, exc: Exception) -> JSONResponse | None:
    assert isinstance(exc, RequestValidationError | WebSocketRequestValidationError)
    errors = list(exc.errors())
    if errors and errors[0].get("type") == "json_invalid":
        return await _respond(conn, 422, _json_invalid(errors[0], getattr(exc, "body", None)))
    details = [
        {"field": field_from_loc(e.get("loc", ())), "message": str(e.get("msg", "invalid"))}
        for e in errors
    ]
    first = details[0] if details else {"field": None, "message": "invalid request"}
    message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    body = error_body("invalid_input", message, first["field"])
    if len(details) > 1:
        body["error"]["details"] = details
    return await _respond(conn, 422, body)


def _json_invalid(error: dict[str, Any], doc: Any) -> dict[str, Any]:
    """A body that is not JSON: where (line, column) and what the parser said. Its
    location is a byte offset, not a field (it was shown as `field: "52"`)."""
    loc = list(error.get("loc", ()))
    pos = loc[-1] if loc and isinstance(loc[-1], int) else None
    what = str((error.get("ctx") or {}).get("error") or "not valid JSON")
    where = ""
    if pos is not None:
        line, column = 1, pos + 1
        if isinstance(doc, str | bytes):
            text = doc if isinstance(doc, str) else doc.decode("utf-8", "replace")
            line = text.count("\n", 0, pos) + 1
            column = pos - (text.rfind("\n", 0, pos) + 1) + 1
        where = f" at line {line}, column {column}"
    return error_body("invalid_input", f"the request body is not valid JSON: {what}{where}", "body")


async def http_error_handler(conn: HTTPConnection, exc: Exception) -> JSONResponse | None:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(
        exc.status_code, "error" if exc.status_code < 500 else "internal_error"
    )
    detail = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return await _respond(
        conn, exc.status_code, error_body(code, detail), getattr(exc, "headers", None)
    )


async def database_error_handler(conn: HTTPConnection, exc: Exception) -> JSONResponse | None:
    assert isinstance(exc, OperationalError)
    if "locked" not in str(exc.orig) and "busy" not in str(exc.orig):
        return await unexpected_error_handler(conn, exc)
    # Another process holds SQLite's write lock beyond the busy timeout: retryable.
    log.warning("database busy during %s %s: %s", conn.scope.get("method"), conn.url.path, exc.orig)
    body = error_body("database_busy", "the database is locked by another process; retry")
    return await _respond(conn, 503, body, {"Retry-After": "5"})


async def unexpected_error_handler(conn: HTTPConnection, exc: Exception) -> JSONResponse | None:
    rid = request_id(conn)
    log.error(
        "request %s %s failed (request id %s)",
        conn.scope.get("method", "WEBSOCKET"),
        conn.url.path,
        rid,
        exc_info=exc,
    )
    body = error_body("internal_error", f"internal error (request id {rid})", request_id=rid)
    return await _respond(conn, 500, body)


def install(app: FastAPI) -> None:
    app.add_exception_handler(KvmmError, kvmm_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(WebSocketRequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(OperationalError, database_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
