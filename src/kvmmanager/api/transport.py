"""What the app believes about the connection: forwarded headers from trusted proxies only,
and HSTS on https.

Behind a TLS reverse proxy every request arrives from the proxy over plain http. Only when
the proxy is listed in `server.trusted_proxies` are its X-Forwarded-For/-Proto believed
(uvicorn's ProxyHeadersMiddleware, inside the app so every way of serving it agrees): then
per-client limits key on the real client and session cookies get `Secure`. From anyone
else those headers are ignored, so a client cannot pick its own address.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from kvmmanager.core.config import ServerSettings


class HstsMiddleware:
    """Strict-Transport-Security on every response served over https (directly or, from a
    trusted proxy, as X-Forwarded-Proto says)."""

    def __init__(self, app: ASGIApp, max_age: int) -> None:
        self.app = app
        self.header = (b"strict-transport-security", f"max-age={max_age}".encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_with_hsts)


def install(app: FastAPI, settings: ServerSettings) -> None:
    """Add the middlewares; call it last so the proxy headers are applied first."""
    if settings.hsts_seconds:
        app.add_middleware(HstsMiddleware, max_age=settings.hsts_seconds)
    if settings.trusted_proxies:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
