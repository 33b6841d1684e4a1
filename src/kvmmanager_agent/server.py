"""The agent's main loop: read lines, answer them on a bounded worker pool.

One reader (the calling thread) feeds the framer; requests run on a pool whose size is
max_concurrent_requests; `sync` is answered inline so it gets through even when every
worker is busy. Requests beyond the concurrency or rate limit are answered -32004 at
once rather than queued, so a flood cannot build an unbounded backlog.
"""

from __future__ import annotations

import os
import threading
import time

from . import protocol
from .config import Config
from .context import Context
from .dispatcher import Dispatcher, encode, error_reply, parse, valid_id
from .framing import Abandoned, LineFramer, Overlong
from .log import log
from .methods import HANDLERS
from .transport import Channel, ChannelClosed, listen_unix, open_device, socket_channel

try:  # the C queue alone: the queue module adds heapq and more, unused here
    from _queue import SimpleQueue
except ImportError:  # not CPython
    from queue import SimpleQueue

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional


TICK = 0.5


class TokenBucket:
    """`rate` tokens a second into a bucket of `burst`: a host may send `burst` requests
    at once, then `rate` a second; a flood is refused, a quick host is not."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.tokens = self.burst
        self.clock = clock
        self.stamp = clock()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


class WorkerPool:
    """A minimal thread pool: threads start on demand up to `size` and then stay.

    (concurrent.futures would do, but costs ~2 MB of resident memory in an idle agent.)
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.jobs: Any = SimpleQueue()
        self.threads: List[threading.Thread] = []
        self.idle = 0
        self.pending = 0
        self.lock = threading.Lock()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        with self.lock:
            self.pending += 1
            if self.idle < self.pending and len(self.threads) < self.size:
                t = threading.Thread(target=self._run, name="kvmm-req", daemon=True)
                self.threads.append(t)
                t.start()
        self.jobs.put((fn, args))

    def _run(self) -> None:
        while True:
            with self.lock:
                self.idle += 1
            item = self.jobs.get()
            with self.lock:
                self.idle -= 1
                self.pending -= 1
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:
                log.exception("worker failure")

    def shutdown(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)


class Agent:
    def __init__(self, config: Config, ctx: Optional[Context] = None) -> None:
        self.config = config
        self.ctx = ctx or Context(config)
        self.dispatcher = Dispatcher(self.ctx, HANDLERS)
        self.pool = WorkerPool(config.max_concurrent_requests)
        self.bucket = TokenBucket(config.requests_per_second, config.requests_burst)
        self.inflight = 0
        self.cond = threading.Condition()
        self.stop_event = threading.Event()

    def stop(self) -> None:
        self.stop_event.set()

    # -- one stream of bytes -------------------------------------------------
    def serve_channel(self, channel: Channel, eof_ends: bool = True) -> None:
        """Answer requests on `channel` until EOF (when eof_ends) or stop()."""
        framer = LineFramer(self.config.max_line_bytes)
        idle = 0.05
        while not self.stop_event.is_set():
            try:
                data = channel.read(TICK)
            except ChannelClosed:
                return
            if data is None:
                # Nothing came: a raw payload in progress may have stalled.
                for item in framer.expire():
                    self.handle_item(item, channel)
                continue
            if not data:
                if eof_ends:
                    return
                # virtio port without a host: read() returns 0 at once, so back off.
                framer.reset()
                self.stop_event.wait(idle)
                idle = min(idle * 2, 1.0, self.config.connection_retry_seconds)
                continue
            idle = 0.05
            for item in framer.feed(data):
                try:
                    self.handle_item(item, channel)
                except Exception:
                    # The reader is the agent: a failure answering one line must not end
                    # it (the dispatcher already turns every request error into a reply).
                    log.exception("unexpected failure reading a request")
                    reply = error_reply(None, protocol.INTERNAL_ERROR, "internal error")
                    self._send(channel, encode(reply))

    def _send(self, channel: Channel, data: bytes) -> None:
        try:
            channel.write(data)
        except ChannelClosed as exc:
            # The host left mid-request: drop the reply, keep serving.
            log.info("reply dropped: %s", exc)

    def handle_item(self, item: Any, channel: Channel) -> None:
        if isinstance(item, Abandoned):
            self._abandoned(item, channel)
            return
        if isinstance(item, Overlong):
            msg = "line longer than %d bytes" % self.config.max_line_bytes
            self._send(channel, encode(error_reply(None, protocol.INVALID_REQUEST, msg)))
            return
        payload, err = parse(item)
        if err is not None:
            self._send(channel, encode(err))
            return
        single = isinstance(payload, dict)
        name = payload.get("method") if single else None
        # Only a string can name a method (a list here is hostile input, not a key).
        method = protocol.METHODS.get(name) if isinstance(name, str) else None
        if method is not None and method.name == "sync":
            reply, _ = self.dispatcher.run(payload)
            if reply is not None:
                prefix = protocol.SYNC_BYTE if "result" in reply else b""
                self._send(channel, prefix + encode(reply))
            return
        exempt = method is not None and method.rate_exempt
        if not exempt and not self.bucket.take():
            self._refuse(
                payload,
                channel,
                "rate limit of %d requests per second exceeded" % self.config.requests_per_second,
            )
            return
        if method is not None and method.inline:
            # Cheap and non-blocking: answered here, without taking a worker slot, so a
            # liveness ping still gets through while every worker is busy.
            reply, _ = self.dispatcher.run(payload)
            if reply is not None:
                self._send(channel, encode(reply))
            return
        with self.cond:
            if self.inflight >= self.config.max_concurrent_requests:
                busy = True
            else:
                busy = False
                self.inflight += 1
        if busy:
            self._refuse(payload, channel, "too many concurrent requests")
            return
        self.pool.submit(self._work, payload, channel)

    def _abandoned(self, item: Abandoned, channel: Channel) -> None:
        payload, _ = parse(item.line)  # the framer parsed this very line already
        msg = (
            "raw payload stalled: %d of %d bytes arrived (each byte is due within %g s, "
            "all within %g s); chunk abandoned, nothing written"
            % (item.got, item.want, protocol.PAYLOAD_GAP_SECONDS, protocol.PAYLOAD_TOTAL_SECONDS)
        )
        log.warning("%s", msg)
        if isinstance(payload, dict) and "id" in payload and valid_id(payload["id"]):
            self._send(channel, encode(error_reply(payload["id"], protocol.TIMEOUT, msg)))

    def _refuse(self, payload: Any, channel: Channel, message: str) -> None:
        if isinstance(payload, dict):
            if "id" not in payload:
                return  # a notification gets no reply, not even an error
            req_id = payload["id"] if valid_id(payload["id"]) else None
        else:
            req_id = None
        self._send(channel, encode(error_reply(req_id, protocol.BUSY, message)))

    def _work(self, payload: Any, channel: Channel) -> None:
        try:
            reply, actions = self.dispatcher.run(payload)
            if reply is not None:
                self._send(channel, encode(reply))
            for action in actions:
                action()
        except Exception:
            log.exception("unexpected failure answering a request")
        finally:
            with self.cond:
                self.inflight -= 1
                self.cond.notify_all()

    def drain(self, grace: float) -> None:
        """Wait for in-flight requests (SIGTERM), at most `grace` seconds."""
        deadline = time.monotonic() + grace
        with self.cond:
            while self.inflight and time.monotonic() < deadline:
                self.cond.wait(deadline - time.monotonic())
        self.pool.shutdown()
        self.ctx.close()

    # -- run modes ------------------------------------------------------------
    def run_device(self, path: str) -> None:
        delay = 0.1
        while not self.stop_event.is_set():
            if not os.path.exists(path):
                # The port appears when the virtio driver binds; check calmly.
                self.stop_event.wait(delay)
                delay = min(delay * 2, self.config.connection_retry_seconds)
                continue
            try:
                channel = open_device(path)
            except OSError as exc:
                log.warning("cannot open %s: %s", path, exc)
                self.stop_event.wait(self.config.connection_retry_seconds)
                continue
            delay = 0.1
            log.info("serving on %s", path)
            try:
                self.serve_channel(channel, eof_ends=False)
            finally:
                channel.close()

    def run_unix(self, path: str, ready: Optional[threading.Event] = None) -> None:
        from socket import timeout as socket_timeout  # loaded by listen_unix anyway

        server = listen_unix(path)
        if ready is not None:
            ready.set()
        log.info("listening on %s", path)
        try:
            while not self.stop_event.is_set():
                try:
                    conn, _ = server.accept()
                except socket_timeout:
                    continue
                channel = socket_channel(conn)
                try:
                    self.serve_channel(channel)
                finally:
                    channel.close()
        finally:
            server.close()

    def run_channel(self, channel: Channel) -> None:
        try:
            self.serve_channel(channel)
        finally:
            channel.close()
