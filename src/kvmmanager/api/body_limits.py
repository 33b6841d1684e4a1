"""Request bodies are bounded in size and time while they arrive, before anything parses them.

FastAPI reads a JSON or form body whole into memory before a route's dependencies run
(authentication included), so without a bound one anonymous client can make the server
hold any amount. This middleware wraps `receive`: once routing has picked the route (at
the first `receive`, which comes after routing), a route that lets FastAPI parse its body
gets `server.max_body_bytes` and `server.body_timeout_seconds`. A declared Content-Length
over the limit is refused before a byte is read; a chunked body is counted as it comes.
Routes marked `@streaming_body` (uploads that stream to libvirt, with limits of their own)
are left alone; they authenticate before reading a byte. A JSON route that has such a
streaming twin (`@large_body_route`) names it in its 413.

FastAPI's own `max_body_size` bounds size only and answers in plain text; this one also
bounds the time and answers in the API's error shape, naming the limit.
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kvmmanager.api.deps import is_streaming_body, large_body_route_of


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int, instead: str | None = None) -> None:
        elsewhere = f"; send larger content with {instead}" if instead else ""
        super().__init__(
            413,
            f"request body is larger than {limit} bytes, the limit of this server "
            f"(server.max_body_bytes){elsewhere}",
            # The rest of the body is not read: the connection cannot serve another request.
            headers={"Connection": "close"},
        )


class BodyTimeout(HTTPException):
    def __init__(self, seconds: float) -> None:
        super().__init__(
            408,
            f"request body did not arrive within {seconds:g} s (server.body_timeout_seconds)",
            headers={"Connection": "close"},
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout_seconds: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        limited: bool | None = None
        instead: str | None = None
        complete = False
        received = 0
        deadline = 0.0

        async def bounded_receive() -> Message:
            nonlocal limited, instead, complete, received, deadline
            if limited is None:
                limited = not is_streaming_body(scope.get("route"))
                if limited:
                    instead = large_body_route_of(scope.get("route"))
                    declared = _content_length(scope)
                    if declared is not None and declared > self.max_bytes:
                        raise BodyTooLarge(self.max_bytes, instead)
                    deadline = loop.time() + self.timeout_seconds
            if not limited or complete:
                # After the body, `receive` only waits for the disconnect (streaming
                # responses listen for it): no deadline applies to that.
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(self.timeout_seconds) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes, instead)
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        await self.app(scope, bounded_receive, send)
