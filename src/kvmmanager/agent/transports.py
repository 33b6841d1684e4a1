"""Byte transports to an agent: a unix socket (local, fast) or a libvirt channel stream.

The libvirt stream (`virDomainOpenChannel`) works for remote hosts and needs no socket
permissions. It runs blocking in one dedicated thread per channel; the thread hands
chunks to the event loop through a bounded queue, so a flooding guest blocks only its
own thread (backpressure), never the loop or another VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from kvmmanager.core.errors import AgentUnavailable

READ_CHUNK = 65536
WRITE_TIMEOUT = 10.0


class ChannelBusy(AgentUnavailable):
    """QEMU's end of the channel serves one client and another one holds it (a second
    manager, a tool): its listen backlog is full, so connect() fails with EAGAIN."""


class Transport(Protocol):
    kind: str

    async def read(self) -> bytes:
        """Next chunk; b"" at end of stream."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...

    def abandon(self) -> None:
        """Cut the connection without the event loop (its loop may be gone)."""
        ...


class UnixTransport:
    kind = "unix"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, path: str, seconds: float = 5.0) -> UnixTransport:
        # connect() here, not asyncio's: on a unix socket whose backlog is full it fails
        # with EAGAIN, which asyncio takes for "in progress" and then reports as connected
        # (the first write or read fails with the bare errno). An AF_UNIX connect never
        # waits: it completes or fails at once.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except BlockingIOError as exc:
            sock.close()
            raise ChannelBusy(
                f"the agent socket {path} is held by another client", details={"path": path}
            ) from exc
        except OSError as exc:
            sock.close()
            raise AgentUnavailable(f"cannot connect to agent socket {path}: {exc}") from exc
        try:
            async with asyncio.timeout(seconds):
                reader, writer = await asyncio.open_unix_connection(sock=sock)
        except (OSError, TimeoutError) as exc:
            sock.close()
            raise AgentUnavailable(f"cannot connect to agent socket {path}: {exc}") from exc
        return cls(reader, writer)

    async def read(self) -> bytes:
        try:
            return await self._reader.read(READ_CHUNK)
        except OSError:
            return b""

    async def write(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            async with asyncio.timeout(WRITE_TIMEOUT):
                await self._writer.drain()
        except (OSError, TimeoutError) as exc:
            raise AgentUnavailable(f"writing to the agent failed: {exc or 'stalled'}") from exc

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()

    def abandon(self) -> None:
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class LibvirtStreamTransport:
    """A virStream opened with virDomainOpenChannel, driven by its own threads."""

    kind = "libvirt"

    def __init__(self, stream: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self._loop = loop
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)
        self._closed = threading.Event()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="agent-chan-w")
        self._thread = threading.Thread(target=self._pump, name="agent-chan-r", daemon=True)
        self._thread.start()

    @classmethod
    async def open(cls, host: Any, uuid: str, channel: str) -> LibvirtStreamTransport:
        def _open() -> Any:
            conn = host.conn
            dom = conn.lookupByUUIDString(uuid)
            stream = conn.newStream(0)
            dom.openChannel(channel, stream, 0)
            return stream

        stream = await host.run(_open)
        return cls(stream, asyncio.get_running_loop())

    def _pump(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._stream.recv(READ_CHUNK)
            except Exception:
                data = b""
            if isinstance(data, int):  # -2: would block (never for a blocking stream)
                continue
            try:
                fut = asyncio.run_coroutine_threadsafe(self._queue.put(data), self._loop)
                # Bounded queue: a guest that floods waits here, in its own thread.
                fut.result()
            except Exception:
                return
            if not data:
                return

    async def read(self) -> bytes:
        return await self._queue.get()

    async def write(self, data: bytes) -> None:
        def _send() -> None:
            view = memoryview(data)
            while view:
                n = self._stream.send(bytes(view[:READ_CHUNK]))
                if n < 0:
                    raise OSError("stream send failed")
                view = view[n:]

        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                await self._loop.run_in_executor(self._writer, _send)
        except Exception as exc:
            raise AgentUnavailable(f"writing to the agent channel failed: {exc}") from exc

    async def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()

        def _abort() -> None:
            with contextlib.suppress(Exception):
                self._stream.abort()

        # abort() also wakes the reader thread blocked in recv().
        await self._loop.run_in_executor(None, _abort)
        self._writer.shutdown(wait=False)

    def abandon(self) -> None:
        self._closed.set()
        with contextlib.suppress(Exception):
            self._stream.abort()
