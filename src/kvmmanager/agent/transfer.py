"""Chunked file transfer over an AgentClient: any size, resumable, sha256-verified.

Uploads stream from a local file object in chunks of the protocol's maximum; with
`resume` the guest keeps what it already has and the upload continues from there (the
host's own bytes up to that point are hashed too, so the final sha256 comparison covers
the whole file). Downloads write to a local file object.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import Callable
from typing import Any, BinaryIO

from kvmmanager.agent.client import AgentClient
from kvmmanager.core.errors import GuestError, InvalidInput
from kvmmanager_agent import protocol

Progress = Callable[[int, int | None], None]


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
    chunk: int = protocol.MAX_CHUNK_BYTES,
) -> dict[str, Any]:
    chunk = max(1, min(chunk, protocol.MAX_CHUNK_BYTES))
    opened = await client.call(
        "file_open",
        {"path": dest, "mode": "w", "resume": resume, "create_dirs": create_dirs,
         "permissions": permissions},
    )  # fmt: skip
    handle = opened["handle"]
    digest = hashlib.sha256()
    offset = 0
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
        while True:
            data = src.read(chunk)
            if not data:
                break
            digest.update(data)
            await client.call(
                "file_write_chunk",
                {"handle": handle, "offset": offset, "data": base64.b64encode(data).decode()},
            )
            offset += len(data)
            if progress is not None:
                progress(offset, size)
    except BaseException:
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


async def abort_write(client: Any, handle: int) -> None:
    """Close a write handle after a failure WITHOUT putting the partial file in place
    (the agent keeps it aside as `.NAME.kvmm-part` for a resume). Best effort: the
    agent may be what failed; an agent older than `abort` keeps the handle until its
    idle timeout, and wrote in place anyway."""
    with contextlib.suppress(Exception):
        await asyncio.shield(client.call("file_close", {"handle": handle, "abort": True}))


async def download(
    client: AgentClient,
    src: str,
    dst: BinaryIO,
    *,
    offset: int = 0,
    progress: Progress | None = None,
    chunk: int = protocol.MAX_CHUNK_BYTES,
) -> dict[str, Any]:
    """Copy guest file `src` into `dst` starting at `offset` (resume: dst already holds
    the first `offset` bytes, which the caller re-hashes by passing them in `prefix`)."""
    chunk = max(1, min(chunk, protocol.MAX_CHUNK_BYTES))
    opened = await client.call("file_open", {"path": src, "mode": "r"})
    handle, total = opened["handle"], int(opened["size_bytes"])
    try:
        pos = offset
        while True:
            r = await client.call(
                "file_read_chunk", {"handle": handle, "offset": pos, "length": chunk}
            )
            data = base64.b64decode(r["data"])
            dst.write(data)
            pos += len(data)
            if progress is not None:
                progress(pos, total)
            if r["eof"] or not data:
                break
    finally:
        closed = await client.call("file_close", {"handle": handle})
    return {"path": src, "size_bytes": pos, "sha256": closed["sha256"]}
