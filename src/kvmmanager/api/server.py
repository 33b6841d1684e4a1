"""How `kvm-manager serve` runs uvicorn so that no client can hold the server's connections.

uvicorn bounds none of this by itself: a connection that sends half its headers is kept
forever (its keep-alive timer only runs between complete requests), httptools accepts
headers of any size, and `limit_concurrency` answers 503 to *every* request once that many
connections are open, so a flood of half-sent requests would lock everyone out either way.
`GuardedHttpProtocol` (uvicorn's httptools protocol, chosen through uvicorn's `http=`
option) adds, per server:

- a header deadline: a request's headers must be complete `server.header_timeout_seconds`
  after the connection opened or the previous response ended, else the connection closes;
- a header size bound (`MAX_HEADER_BYTES`, answered with 400 like a malformed request);
- a connection cap per client address (`server.max_connections_per_address`; the address
  of a trusted proxy is exempt) and in all (`server.max_connections`, lowered to fit the
  process's descriptor limit). When the server is full, a new connection closes the oldest
  one that has no request in progress, so stalled connections never keep a working client
  out. The body of a request is bounded in size and time by api/body_limits.py.

`RefusingWebSocketProtocol` (uvicorn's `ws=` option) makes a refused WebSocket handshake
(no login, foreign origin, another user's VM) a clean refusal: its access line at INFO,
no ERROR.
"""

from __future__ import annotations

import ipaddress
import logging
import resource
from asyncio import TimerHandle, Transport
from collections import Counter
from typing import Any

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from kvmmanager.core.config import ServerSettings

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
# Descriptors kept for everything but client connections: the database, libvirt
# connections and streams, agent channels, log files, uploads in flight.
RESERVED_FDS = 256

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(entries: list[str]) -> list[Network]:
    return [ipaddress.ip_network(e, strict=False) for e in entries]


def is_trusted(address: str, networks: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one (what LimitNOFILE grants); returns
    the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning("could not raise the descriptor limit from %s: %s", soft, e)
    return soft


def connection_cap(configured: int, fd_limit: int) -> int:
    """`configured`, lowered so that connections never use the descriptors the rest of
    the server needs (at the limit, accept() fails and nobody new gets in)."""
    room = fd_limit - RESERVED_FDS if fd_limit > 2 * RESERVED_FDS else fd_limit // 2
    return max(1, min(configured, room))


class ConnectionGuard:
    """The open connections of one server: caps per address and in all."""

    def __init__(self, max_connections: int, per_address: int, trusted: list[Network]) -> None:
        self.max_connections = max_connections
        self.per_address = per_address
        self.trusted = trusted
        # Insertion order is age: the first idle entry is the oldest idle connection.
        self.open: dict[GuardedHttpProtocol, str] = {}
        self.by_address: Counter[str] = Counter()

    def admit(self, conn: GuardedHttpProtocol) -> bool:
        address = conn.client[0] if conn.client else ""
        if self.by_address[address] >= self.per_address and not is_trusted(address, self.trusted):
            return False
        if len(self.open) >= self.max_connections:
            victim = next((c for c in self.open if c.awaiting_headers), None)
            if victim is None:
                return False
            self.release(victim)
            victim.transport.close()
        self.open[conn] = address
        self.by_address[address] += 1
        return True

    def release(self, conn: GuardedHttpProtocol) -> None:
        address = self.open.pop(conn, None)
        if address is not None:
            self.by_address[address] -= 1
            if self.by_address[address] <= 0:
                del self.by_address[address]


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds above (`guard` and `header_timeout`
    are set on the subclass `protocol_class` makes for one server)."""

    guard: ConnectionGuard
    header_timeout: float

    awaiting_headers = True
    _header_bytes = 0
    _header_timer: TimerHandle | None = None

    # uvicorn declares BaseTransport; a stream server hands its protocols a Transport.
    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.admit(self):
            transport.close()
            return
        self._expect_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.release(self)
        self._stop_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.awaiting_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if (
            self.awaiting_headers
            and self._header_bytes > MAX_HEADER_BYTES
            and not self.transport.is_closing()
        ):
            self.send_400_response(f"Request headers larger than {MAX_HEADER_BYTES} bytes.")

    def on_headers_complete(self) -> None:
        self.awaiting_headers = False
        self._stop_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)  # its headers are in already
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._expect_headers()

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol takes the transport over; it is no longer ours to count.
        self.awaiting_headers = False
        self._stop_header_timer()
        self.guard.release(self)
        super().handle_websocket_upgrade()

    def _expect_headers(self) -> None:
        self.awaiting_headers = True
        self._header_bytes = 0
        self._stop_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.awaiting_headers and not self.transport.is_closing():
            self.transport.close()


class RefusingWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, aware that an HTTP denial ends the handshake.

    The app refuses a handshake with an HTTP response (ASGI `websocket.http.response`,
    api/errors.py) so the client learns why (401, 403, 404). uvicorn's protocol sends it
    but still counts the handshake as incomplete, and so logs "ASGI callable returned
    without completing handshake" at ERROR for every refusal: anonymous clients could
    fill the log with errors. Once the denial's last body part is sent the handshake is
    over (as uvicorn's wsproto protocol records it); uvicorn has already logged the
    refusal's access line at INFO."""

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get(
            "more_body", False
        ):
            self.handshake_complete = True


def protocol_class(settings: ServerSettings, fd_limit: int) -> type[GuardedHttpProtocol]:
    """A protocol class for one server, its guard shared by all its connections."""
    guard = ConnectionGuard(
        connection_cap(settings.max_connections, fd_limit),
        settings.max_connections_per_address,
        trusted_networks(settings.trusted_proxies),
    )
    attrs = {"guard": guard, "header_timeout": settings.header_timeout_seconds}
    return type("KvmmHttpProtocol", (GuardedHttpProtocol,), attrs)


def uvicorn_options(settings: ServerSettings) -> dict[str, Any]:
    """The uvicorn.run() options that bound clients (the caller adds app, logging)."""
    fd_limit = raise_fd_limit()
    return {
        "http": protocol_class(settings, fd_limit),
        "ws": RefusingWebSocketProtocol,
        "timeout_keep_alive": settings.keep_alive_seconds,
        # Forwarded headers are honoured inside the app, from trusted proxies only
        # (api/transport.py), so that every way of serving the app behaves the same.
        "proxy_headers": False,
        # Not limit_concurrency: it answers 503 to everyone once that many connections
        # are open, which is what a flood of stalled connections wants.
    }
