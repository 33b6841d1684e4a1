"""Chunked file transfer over an AgentClient: any size, resumable, sha256-verified.

Uploads stream from a local file object; with `resume` the guest keeps what it already
has and the upload continues from there (the host's own bytes up to that point are
hashed too, so the final sha256 comparison covers the whole file). Downloads write to a
local file object.

Throughput comes from two things the agent offers in its file_open reply
(`max_binary_chunk_bytes`, `max_chunks_in_flight`): chunks travel as raw bytes after
their request line (no base64, no big JSON string for either side to parse), and
several are in flight at once instead of one round trip each. An agent without them
gets base64 chunks one at a time, as before. Downloads keep several reads in flight
(reads at known offsets are independent) and write the answers in order.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, BinaryIO

from kvmmanager.agent.client import RAW_RESULT_KEY, AgentClient
from kvmmanager.core.errors import GuestError, InvalidInput
from kvmmanager_agent import protocol

Progress = Callable[[int, int | None], None]

# Raw chunk size of an upload to an agent that takes binary chunks (tried 0.5-4 MiB on a
# host unix socket: 1 MiB is as fast as bigger ones and keeps the memory in flight low).
BINARY_CHUNK_BYTES = 1024 * 1024
# Reads kept in flight by a download.
READ_WINDOW = 4
# After a failure, how long the writes already in flight may take to finish.
SETTLE_SECONDS = 5.0


class ChunkWriter:
    """The writes of one open handle: chunks of the size the agent takes, as raw bytes
    with several in flight when it offered that (file_open's reply), else base64 one by
    one. `write()` any amount, then `finish()`; on failure `settle()` before the abort."""

    def __init__(
        self,
        client: AgentClient,
        opened: dict[str, Any],
        offset: int,
        *,
        chunk: int | None = None,
        pipelined: bool = True,
        progress: Progress | None = None,
        size: int | None = None,
    ) -> None:
        self.client = client
        self.handle = opened["handle"]
        self.offset = offset  # bytes handed to the agent so far
        self.progress = progress
        self.size = size
        offered = opened.get("max_binary_chunk_bytes") if pipelined else None
        binary_max = offered if isinstance(offered, int) else 0
        self.binary = binary_max > 0
        if self.binary:
            self.chunk = max(1, min(chunk or BINARY_CHUNK_BYTES, int(binary_max)))
            self.window = max(1, min(int(opened.get("max_chunks_in_flight") or 1), 16))
        else:
            limit = int(opened.get("max_chunk_bytes") or protocol.MAX_CHUNK_BYTES)
            self.chunk = max(1, min(chunk or protocol.MAX_CHUNK_BYTES, limit))
            self.chunk = min(self.chunk, protocol.MAX_CHUNK_BYTES)
            self.window = 1
        self.inflight: deque[tuple[asyncio.Task[Any], int]] = deque()
        self.buf = bytearray()

    async def write(self, data: bytes) -> None:
        """Send whole chunks of `data` (the rest waits for more, or for finish())."""
        if not self.buf and len(data) == self.chunk:
            await self._send(data)
            return
        self.buf += data
        while len(self.buf) >= self.chunk:
            piece = bytes(self.buf[: self.chunk])
            del self.buf[: self.chunk]
            await self._send(piece)

    async def finish(self) -> int:
        """Send what is left and wait for every write; the byte count written."""
        if self.buf:
            piece = bytes(self.buf)
            self.buf.clear()
            await self._send(piece)
        while self.inflight:
            await self._settle_oldest()
        return self.offset

    async def settle(self) -> None:
        """After a failure: let the chunks already sent land (briefly: the agent may be
        what failed), so the part file kept for a resume holds them and the abort
        comes after them."""
        await _settle(task for task, _ in self.inflight)
        self.inflight.clear()

    async def _send(self, data: bytes) -> None:
        call: Awaitable[Any]
        if self.binary:
            params = {"handle": self.handle, "offset": self.offset}
            call = self.client.call("file_write_chunk", params, payload=data)
        else:
            b64 = base64.b64encode(data).decode()
            params = {"handle": self.handle, "offset": self.offset, "data": b64}
            call = self.client.call("file_write_chunk", params)
        self.offset += len(data)
        self.inflight.append((asyncio.ensure_future(call), self.offset))
        if len(self.inflight) >= self.window:
            await self._settle_oldest()

    async def _settle_oldest(self) -> None:
        task, done = self.inflight.popleft()
        await task
        if self.progress is not None:
            self.progress(done, self.size)


async def upload(
    client: AgentClient,
    src: BinaryIO,
    dest: str,
    *,
    size: int | None = None,
    resume: bool = False,
    create_dirs: bool = False,
    permissions: str | None = None,
    progress: Progress | None = None,
    chunk: int | None = None,
    pipelined: bool = True,
) -> dict[str, Any]:
    """`pipelined=False` forces the one-by-one base64 mode of older agents (benchmarks)."""
    opened = await client.call(
        "file_open",
        {"path": dest, "mode": "w", "resume": resume, "create_dirs": create_dirs,
         "permissions": permissions},
    )  # fmt: skip
    handle = opened["handle"]
    digest = hashlib.sha256()
    offset = 0
    writer: ChunkWriter | None = None
    try:
        if resume and opened["size_bytes"]:
            # Hash our own copy of what the guest already has, then continue after it.
            want = int(opened["size_bytes"])
            while offset < want:
                data = src.read(min(1 << 20, want - offset))
                if not data:
                    raise InvalidInput(
                        "the guest file is longer than the source: cannot resume", field="resume"
                    )
                digest.update(data)
                offset += len(data)
        writer = ChunkWriter(
            client, opened, offset, chunk=chunk, pipelined=pipelined, progress=progress,
            size=size,
        )  # fmt: skip
        while data := src.read(writer.chunk):
            digest.update(data)
            await writer.write(data)
        offset = await writer.finish()
    except BaseException:
        if writer is not None:
            await writer.settle()
        await abort_write(client, handle)
        raise
    closed = await client.call("file_close", {"handle": handle})
    expected = digest.hexdigest()
    if closed["sha256"] != expected or closed["size_bytes"] != offset:
        raise GuestError(
            f"upload verification failed for {dest}: sha256 mismatch",
            details={"expected": expected, "guest": str(closed.get("sha256"))[:64]},
        )
    return {"path": dest, "size_bytes": offset, "sha256": expected}


async def _settle(tasks: Any) -> None:
    pending = list(tasks)
    if pending:
        await asyncio.wait(pending, timeout=SETTLE_SECONDS)
    await _cancel(pending)


async def _cancel(tasks: Any) -> None:
    """Cancel calls still in flight and collect their outcome (nothing left unretrieved)."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


async def abort_write(client: Any, handle: int) -> None:
    """Close a write handle after a failure WITHOUT putting the partial file in place
    (the agent keeps it aside as `.NAME.kvmm-part` for a resume). Best effort: the
    agent may be what failed; an agent older than `abort` keeps the handle until its
    idle timeout, and wrote in place anyway."""
    with contextlib.suppress(Exception):
        await asyncio.shield(client.call("file_close", {"handle": handle, "abort": True}))


class Download:
    """A guest file being read: `size` at open, then `chunks()` yields its bytes from
    `offset` on, with READ_WINDOW reads in flight (reads at known offsets are
    independent) handed out in order. The handle is closed when the iteration ends,
    however it ends; `sha256` is the guest's digest of the whole file, known then."""

    def __init__(
        self, client: AgentClient, src: str, opened: dict[str, Any], offset: int,
        chunk: int | None, window: int, binary: bool = True,
    ) -> None:  # fmt: skip
        self.client = client
        self.src = src
        self.handle = opened["handle"]
        self.size = int(opened["size_bytes"])
        self.offset = offset
        # Raw reads (the bytes after the reply line, no base64) when the agent offers them.
        offered = opened.get("max_binary_chunk_bytes")
        binary_max = offered if isinstance(offered, int) else 0
        self.binary = binary_max > 0 and binary
        limit = int(binary_max) if self.binary else protocol.MAX_CHUNK_BYTES
        self.chunk = max(1, min(chunk or (BINARY_CHUNK_BYTES if self.binary else limit), limit))
        self.window = max(1, window)
        self.done = offset
        self.sha256: str | None = None
        self.closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        inflight: deque[tuple[asyncio.Task[Any], int]] = deque()
        ahead = self.offset  # the next offset to ask for

        def ask() -> None:
            nonlocal ahead
            params = {"handle": self.handle, "offset": ahead, "length": self.chunk}
            if self.binary:
                params["binary"] = True
            call = self.client.call("file_read_chunk", params)
            inflight.append((asyncio.ensure_future(call), ahead))
            ahead += self.chunk

        try:
            while True:
                # Reads ahead up to the size seen at open; past it (a growing file), one
                # at a time.
                while len(inflight) < self.window and (ahead < self.size or not inflight):
                    ask()
                task, at = inflight.popleft()
                r = await task
                if at != self.done:
                    raise GuestError(f"download of {self.src}: a short read at {at} left a gap")
                data = self._data(r)
                self.done += len(data)
                if data:
                    yield data
                if r["eof"] or not data:
                    return
                if len(data) < self.chunk:
                    # Short but not at the end (the file changed): re-ask from here.
                    await _cancel(t for t, _ in inflight)
                    inflight.clear()
                    ahead = self.done
        finally:
            await _cancel(t for t, _ in inflight)
            await self.close()

    def _data(self, r: dict[str, Any]) -> bytes:
        if self.binary:
            raw = r.get(RAW_RESULT_KEY)
            if not isinstance(raw, bytes) or len(raw) != r.get("length"):
                raise GuestError(f"download of {self.src}: the agent's raw chunk is malformed")
            return raw
        return base64.b64decode(r["data"])

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        closed = await asyncio.shield(self.client.call("file_close", {"handle": self.handle}))
        self.sha256 = closed.get("sha256")


async def open_download(
    client: AgentClient,
    src: str,
    *,
    offset: int = 0,
    chunk: int | None = None,
    window: int = READ_WINDOW,
    binary: bool = True,
) -> Download:
    """Open guest file `src` for reading from `offset` (a resume); see Download.
    `binary=False` forces the base64 reads of older agents (benchmarks)."""
    if offset < 0:
        raise InvalidInput("offset must be >= 0", field="offset")
    opened = await client.call("file_open", {"path": src, "mode": "r"})
    return Download(client, src, opened, offset, chunk, window, binary)


async def download(
    client: AgentClient,
    src: str,
    dst: BinaryIO,
    *,
    offset: int = 0,
    progress: Progress | None = None,
    chunk: int | None = None,
    window: int = READ_WINDOW,
    binary: bool = True,
) -> dict[str, Any]:
    """Copy guest file `src` into `dst` starting at `offset` (resume: dst already holds
    the first `offset` bytes)."""
    d = await open_download(client, src, offset=offset, chunk=chunk, window=window, binary=binary)
    async for data in d.chunks():
        dst.write(data)
        if progress is not None:
            progress(d.done, d.size)
    await d.close()
    return {"path": src, "size_bytes": d.done, "sha256": d.sha256}
