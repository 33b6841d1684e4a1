"""AgentClient: JSON-RPC requests to one guest agent over any Transport.

- `sync` (a random nonce, preceded by a 0xFF byte) on every connect and after any
  timeout; requests wait until it succeeded, so a late reply to an old request can
  never be taken for the answer to a new one (ids are never reused either).
- Per-method timeouts from the protocol's timeout classes (settings may scale them).
- Everything from the guest is bounded: line/reply size, garbage and unsolicited lines;
  a guest that exceeds them is disconnected and re-synced on the next call. Nothing here
  blocks the event loop; each client is independent of every other VM's.
- A guest disconnected for misbehaving again and again (no real answer in between) gets
  its next connection later and later (1 s, doubling up to a minute); calls meanwhile
  fail at once. Reading a hostile guest costs the manager's loop up to a full reply
  (16 MiB) per connection: at one per API call that would be the API's latency to pay.
- QEMU's end of the channel takes ONE client (design.md decision 6), and other managers
  and tools share it: the client holds the connection only while it talks (connect,
  sync, talk) and releases it once no call was in flight for `idle_release_seconds`;
  a sync unanswered on a fresh connection (QEMU queued it behind another client) is
  retried within the same busy window before the agent counts as unresponsive.
  A connect that finds the channel busy waits its turn (bounded backoff with jitter, up
  to `busy_wait_seconds`) and then fails naming the reason, never with the bare errno.
  The status ("connected") is the channel's, from libvirt: an idle release keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kvmmanager.agent.framing import ReplyFramer
from kvmmanager.agent.transports import ChannelBusy, Transport
from kvmmanager.core.errors import (
    AgentUnavailable,
    GuestError,
    InvalidInput,
    KvmmError,
    NotFound,
    PermissionDenied,
    RateLimited,
    Timeout,
    Unsupported,
)
from kvmmanager_agent import protocol

log = logging.getLogger(__name__)

Opener = Callable[[], Awaitable[Transport]]
StatusCallback = Callable[[str], None]

MAX_GARBAGE_LINES = 16
# Where a result's raw bytes (the ones that followed its reply line) are handed over.
RAW_RESULT_KEY = "@raw"
MAX_UNSOLICITED_LINES = 256
# Reconnect delays after repeated misbehaviour: the first retry is immediate (an agent
# that restarts after one bad moment is back at once), then 1, 2, 4 ... 60 s.
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
# Linger after the last reply: a burst of calls (guest info's six, a transfer's chunks)
# shares one connection, and the port is free for others a moment later.
IDLE_RELEASE_SECONDS = 0.25
# How long a connect waits for a channel another client holds; retries start at 50 ms
# and double up to 1 s, with jitter so two waiting managers do not retry in lockstep.
BUSY_WAIT_SECONDS = 15.0
BUSY_FIRST_DELAY = 0.05
BUSY_MAX_DELAY = 1.0


def guest_error(method: str, error: Any) -> KvmmError:
    """Map a JSON-RPC error object from the guest to the product's error vocabulary."""
    if not isinstance(error, dict):
        return GuestError(f"{method}: malformed error from the guest")
    code = error.get("code")
    message = str(error.get("message", ""))[:500]
    data = error.get("data")
    field = data.get("field") if isinstance(data, dict) else None
    field = str(field)[:64] if field is not None else None
    details = {"rpc_code": code, "method": method}
    text = f"guest agent: {message}"
    classes: dict[int, type[KvmmError]] = {
        protocol.INVALID_PARAMS: InvalidInput,
        protocol.INVALID_REQUEST: InvalidInput,
        protocol.METHOD_NOT_FOUND: Unsupported,
        protocol.PERMISSION_DENIED: PermissionDenied,
        protocol.NOT_FOUND: NotFound,
        protocol.TIMEOUT: Timeout,
        protocol.BUSY: RateLimited,
    }
    # The code comes from the guest: anything but a number (a list is unhashable) is a
    # plain GuestError.
    cls = classes.get(code, GuestError) if isinstance(code, int) else GuestError
    return cls(text, field=field, details=details)


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n"


class AgentClient:
    def __init__(
        self,
        opener: Opener,
        *,
        name: str = "agent",
        max_reply_bytes: int = protocol.MAX_REPLY_BYTES,
        max_request_bytes: int = protocol.MAX_LINE_BYTES,
        timeouts: dict[str, float] | None = None,
        on_status: StatusCallback | None = None,
        idle_release_seconds: float | None = IDLE_RELEASE_SECONDS,
        busy_wait_seconds: float = BUSY_WAIT_SECONDS,
    ) -> None:
        """`idle_release_seconds`: None holds the connection until close()."""
        self.name = name
        self.idle_release_seconds = idle_release_seconds
        self.busy_wait_seconds = busy_wait_seconds
        self._active = 0  # calls in flight (a connection is only released at zero)
        self._release: asyncio.TimerHandle | None = None
        self._opener = opener
        self._max_reply = max_reply_bytes
        # The agent answers an overlong line with an id-less error we could not match to
        # the request: refuse it here instead (the agent's own limit once it told us).
        self.max_request_bytes = max_request_bytes
        self.timeouts = dict(protocol.TIMEOUT_CLASSES)
        self.timeouts.update(timeouts or {})
        self._on_status = on_status
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._transport: Transport | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ready_lock = asyncio.Lock()
        self._need_sync = True
        self._sync: tuple[str, int, asyncio.Future[None]] | None = None
        # Set by close(): a closed client never connects again. Whoever still holds it
        # (a long transfer across the agent's restart) must not take QEMU's one-client
        # port from the client that replaced it (that one's connects would then fail
        # with EAGAIN for as long as the orphan lives).
        self._closed = False
        self._garbage = 0
        self._unsolicited = 0
        self._strikes = 0  # disconnects for misbehaving since the last real answer
        self._retry_at = 0.0  # time.monotonic() before which we do not reconnect
        self.status = "disconnected"
        self.transport_kind: str | None = None
        self.agent_info: dict[str, Any] | None = None

    # -- public API -----------------------------------------------------------------

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        payload: bytes | None = None,
    ) -> Any:
        """`payload`: raw bytes sent right after the request line (file_write_chunk's
        `binary_length`, which is set from it); only to an agent that offered it."""
        spec = protocol.METHODS.get(method)
        if spec is None:
            raise InvalidInput(f"unknown agent method '{method}'", field="method")
        given = {k: v for k, v in (params or {}).items() if v is not None}
        if payload is not None:
            if method != "file_write_chunk":
                raise InvalidInput(f"{method} takes no raw payload", field="payload")
            given["binary_length"] = len(payload)
        try:
            protocol.validate_params(spec, given)
        except protocol.ParamError as exc:
            raise InvalidInput(str(exc), field=exc.field) from None
        if timeout is None:
            timeout = self.timeouts[spec.timeout]
            if method == "exec_command":
                # The guest kills the command at its own timeout; allow for the reply.
                timeout = max(timeout, float(given.get("timeout_seconds", 30)) + 10)
        self._active += 1
        if self._release is not None:
            self._release.cancel()
            self._release = None
        try:
            await self.ensure_ready()
            return await self._request(method, given, timeout, payload)
        finally:
            self._active -= 1
            if self._active == 0 and self.idle_release_seconds is not None:
                self._release = asyncio.get_running_loop().call_later(
                    self.idle_release_seconds, self._release_idle
                )

    @property
    def holding(self) -> bool:
        """Does this client hold the channel right now?"""
        return self._transport is not None

    def _release_idle(self) -> None:
        self._release = None
        if self._active == 0 and self._transport is not None and not self._pending:
            self._spawn_disconnect("idle")

    def _spawn_disconnect(self, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(self._disconnect(reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def ensure_ready(self) -> None:
        """Connect and sync if needed (serialised: one handshake at a time)."""
        if self._transport is not None and not self._need_sync:
            return
        async with self._ready_lock:
            if self._closed:
                raise AgentUnavailable(
                    f"{self.name}: the connection to the agent was closed", field="vm"
                )
            started = time.monotonic()
            while True:
                fresh = self._transport is None
                if fresh:
                    await self._connect()
                if not self._need_sync:
                    return
                # A sync unanswered on a fresh connection to an agent that answered
                # before (released while idle) may mean QEMU queued us behind another
                # client that is still talking: retry within the busy window; it is
                # marked unresponsive only once that is spent. A first contact is not
                # retried (a guest that never answered is cut off at once).
                retry = (
                    fresh
                    and self.status == "connected"
                    and time.monotonic() - started < self.busy_wait_seconds
                )
                try:
                    await self._do_sync(final=not retry)
                    return
                except AgentUnavailable:
                    if not retry or self._closed:
                        raise
                jitter = random.uniform(0.5, 1.0)  # noqa: S311 (not security)
                await asyncio.sleep(BUSY_MAX_DELAY * jitter)

    async def _connect(self) -> None:
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            raise AgentUnavailable(
                f"{self.name}: the agent was disconnected for misbehaving "
                f"{self._strikes} times in a row; next attempt in {wait:.0f} s",
                field="vm",
                details={"retry_after_seconds": round(wait, 1)},
            )
        if self.status != "connected":
            # After an idle release the channel is still connected (libvirt
            # says so): reconnecting is no status change worth an event.
            self._set_status("connecting")
        transport = await self._open_waiting()
        if self._closed:
            # close() came while connecting (the agent's port closed, say): this
            # new connection would be an orphan holding QEMU's one-client port.
            with contextlib.suppress(Exception):
                await transport.close()
            raise AgentUnavailable(
                f"{self.name}: the connection to the agent was closed", field="vm"
            )
        self._attach(transport)
        self._need_sync = True

    async def _open_waiting(self) -> Transport:
        """Open the channel; while another client holds it, wait with bounded backoff."""
        deadline = time.monotonic() + self.busy_wait_seconds
        delay = BUSY_FIRST_DELAY
        tries = 0
        while True:
            tries += 1
            try:
                return await self._opener()
            except ChannelBusy as exc:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise ChannelBusy(
                        f"{self.name}: the agent channel is held by another client (another "
                        "manager or tool on this host; QEMU's channel serves one at a time); "
                        f"it stayed busy for {self.busy_wait_seconds:g} s over {tries} "
                        "attempts: try again later",
                        field="vm",
                        details={"reason": exc.message, "attempts": tries},
                    ) from None
                # Jitter only (not security): two waiting managers do not retry in lockstep.
                jitter = random.uniform(0.5, 1.0)  # noqa: S311
                await asyncio.sleep(min(delay * jitter, left))
                delay = min(delay * 2, BUSY_MAX_DELAY)

    async def close(self) -> None:
        self._closed = True
        if self._release is not None:
            self._release.cancel()
            self._release = None
        await self._disconnect("closed")
        self._set_status("disconnected")

    def abandon(self) -> None:
        """Drop the connection from outside its event loop (that loop may be closed)."""
        transport, self._transport = self._transport, None
        self._need_sync = True
        if transport is not None:
            transport.abandon()

    # -- internals ------------------------------------------------------------------

    def _set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            if self._on_status is not None:
                try:
                    self._on_status(status)
                except Exception:
                    log.exception("agent status callback failed")

    def _attach(self, transport: Transport) -> None:
        self._transport = transport
        self.transport_kind = transport.kind
        self._framer = ReplyFramer(self._max_reply)
        self._garbage = self._unsolicited = 0
        self._reader = asyncio.create_task(self._read_loop(transport), name=f"agent-{self.name}")

    async def _request(
        self, method: str, params: dict[str, Any], seconds: float, payload: bytes | None = None
    ) -> Any:
        req_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id, "method": method}
        if params:
            msg["params"] = params
        line = encode(msg)
        limit = self._request_limit()
        if payload is not None:
            # The line and its bytes in one write: pipelined requests never interleave.
            limit = min(limit, protocol.MAX_BINARY_HEADER_BYTES)
        if len(line) > limit:
            self._pending.pop(req_id, None)
            raise InvalidInput(
                f"{method} request of {len(line)} bytes exceeds the agent's line limit of "
                f"{limit} bytes (use the chunked transfer for big files)",
                field="params",
            )
        try:
            transport = self._transport
            if transport is None:
                raise AgentUnavailable(f"{self.name}: agent connection lost", field="vm")
            try:
                await transport.write(line if payload is None else line + payload)
            except AgentUnavailable:
                await self._disconnect("write failed")
                raise
            try:
                async with asyncio.timeout(seconds):
                    reply = await fut
            except TimeoutError:
                # The reply may still come later: resync before the next request.
                self._need_sync = True
                raise Timeout(
                    f"{self.name}: agent did not answer {method} within {seconds:g} s",
                    details={"method": method},
                ) from None
        finally:
            self._pending.pop(req_id, None)
        if "error" in reply:
            raise guest_error(method, reply["error"])
        return reply.get("result")

    def _request_limit(self) -> int:
        limits = (self.agent_info or {}).get("limits")
        told = limits.get("max_line_bytes") if isinstance(limits, dict) else None
        if isinstance(told, int) and told >= 1024:
            return told
        return self.max_request_bytes

    async def _do_sync(self, final: bool = True) -> None:
        transport = self._transport
        assert transport is not None
        nonce = secrets.randbelow(2**53)
        sync_id = f"sync-{nonce}"
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sync = (sync_id, nonce, fut)
        msg = {"jsonrpc": "2.0", "id": sync_id, "method": "sync", "params": {"nonce": nonce}}
        try:
            # The leading 0xFF makes the agent drop any partial line it holds.
            await transport.write(b"\xff" + encode(msg))
            async with asyncio.timeout(self.timeouts["short"]):
                await fut
        except (TimeoutError, AgentUnavailable) as exc:
            await self._disconnect("sync failed")
            if final:
                self._set_status("unresponsive")
            raise AgentUnavailable(
                f"{self.name}: agent did not answer sync", details={"reason": str(exc)}
            ) from None
        finally:
            self._sync = None
        self._need_sync = False
        self._set_status("connected")

    async def _read_loop(self, transport: Transport) -> None:
        reason = "agent closed the channel"
        try:
            while True:
                data = await transport.read()
                if not data:
                    break
                for after_sync, line, raw in self._framer.feed(data):
                    self._on_line(after_sync, line, raw)
        except asyncio.CancelledError:
            raise
        except KvmmError as exc:
            reason = exc.message
            log.warning("%s: disconnecting misbehaving agent: %s", self.name, reason)
            # Its VM shows unresponsive until the next call reconnects and re-syncs.
            self._set_status("unresponsive")
            self._strike()
        except Exception as exc:
            reason = f"read failed: {exc}"
        if self._transport is transport:
            # Not awaited from inside our own task: schedule the teardown.
            self._spawn_disconnect(reason)

    def _on_line(self, after_sync: bool, line: bytes, raw: bytes | None = None) -> None:
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError):
            msg = None
        if not isinstance(msg, dict):
            if self._sync is None:
                self._garbage += 1
                if self._garbage > MAX_GARBAGE_LINES:
                    raise GuestError(f"{self.name}: agent keeps sending garbage")
            return
        msg_id = msg.get("id")
        if self._sync is not None and after_sync:
            sync_id, nonce, fut = self._sync
            result = msg.get("result")
            if msg_id == sync_id and isinstance(result, dict) and result.get("nonce") == nonce:
                if not fut.done():
                    fut.set_result(None)
                return
        # `true` == 1 in Python: a boolean id must not answer request 1.
        ours = isinstance(msg_id, int) and not isinstance(msg_id, bool)
        fut2 = self._pending.get(msg_id) if isinstance(msg_id, int) and ours else None
        if fut2 is None or fut2.done() or not ("result" in msg or "error" in msg):
            # Late reply to a request that timed out, or junk.
            self._unsolicited += 1
            if self._unsolicited > MAX_UNSOLICITED_LINES:
                raise GuestError(f"{self.name}: agent floods unsolicited messages")
            return
        self._unsolicited = 0
        self._garbage = 0
        self._strikes = 0  # a real answer: whatever went wrong before is forgiven
        if raw is not None and isinstance(msg.get("result"), dict):
            msg["result"][RAW_RESULT_KEY] = raw
        fut2.set_result(msg)

    def _strike(self) -> None:
        self._strikes += 1
        if self._strikes > 1:
            delay = min(BACKOFF_FIRST_SECONDS * 2 ** (self._strikes - 2), BACKOFF_MAX_SECONDS)
            self._retry_at = time.monotonic() + delay

    async def _disconnect(self, reason: str) -> None:
        transport, self._transport = self._transport, None
        reader, self._reader = self._reader, None
        self._need_sync = True
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(AgentUnavailable(f"{self.name}: {reason}", field="vm"))
        if self._sync is not None and not self._sync[2].done():
            self._sync[2].set_exception(AgentUnavailable(reason))
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        if transport is not None:
            with contextlib.suppress(Exception):
                await transport.close()
