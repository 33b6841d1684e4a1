"""Browser-facing protections: security headers on every response, HTML error pages.

The Content-Security-Policy allows no inline script at all (htmx is configured through
attributes and a meta tag, our JS lives in /static), so an unescaped guest string could
not run even if one slipped through the templates' autoescaping. Inline styles are
allowed because xterm.js injects its own style elements.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kvmmanager.core.errors import KvmmError, PasswordChangeRequired, Unauthenticated

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self' ws: wss:; font-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in HEADERS if k not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_wrapper)


def is_page_request(conn: HTTPConnection) -> bool:
    path = conn.url.path
    return conn.scope["type"] == "http" and not path.startswith(("/api/", "/static/", "/vendor/"))


def install_error_pages(app: FastAPI) -> None:
    """Pages answer an unauthenticated visit with a redirect to /login, htmx requests with
    a toast; the API keeps its JSON error shape."""
    api_handler = app.exception_handlers[KvmmError]

    async def handler(conn: HTTPConnection, exc: Exception) -> Response | None:
        assert isinstance(exc, KvmmError)
        if not is_page_request(conn):
            return await api_handler(conn, exc)
        request = Request(conn.scope, conn.receive)
        from kvmmanager.web.templating import error_response

        if isinstance(exc, PasswordChangeRequired):
            # The first admin's generated password: the account page changes it.
            if request.headers.get("hx-request"):
                return Response(status_code=204, headers={"HX-Redirect": "/account"})
            return RedirectResponse("/account", status_code=303)
        if isinstance(exc, Unauthenticated) and request.method == "GET":
            if request.headers.get("hx-request"):
                return Response(status_code=204, headers={"HX-Redirect": "/login"})
            target = quote(
                request.url.path + (f"?{request.url.query}" if request.url.query else "")
            )
            return RedirectResponse(f"/login?next={target}", status_code=303)
        return error_response(request, exc)

    app.add_exception_handler(KvmmError, handler)
