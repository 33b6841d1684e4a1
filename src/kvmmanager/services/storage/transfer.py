"""Volume upload and download as streams through libvirt (virStorageVolUpload/Download).

Bytes never touch the host's filesystem directly: they go through `conn.newStream()` so
a remote host (`qemu+ssh://`, `qemu+tls://`) works exactly like the local one and
libvirtd writes the volume with its own rights.

Every blocking libvirt call (stream send/recv/finish/abort, volume delete) runs on the
host's worker threads via `host.run`, one call per chunk: a long transfer never pins a
worker thread, and the source may be an async iterator (an HTTP request body) without
a thread-to-loop bridge. Chunks are coalesced to `CHUNK_SIZE` to keep thread hops rare.

Cleanup rule: an upload that fails, is cancelled, or delivers fewer/more bytes than it
declared aborts the stream; if the upload created the volume, the volume is deleted, so
nothing half-written remains. Writing into an existing volume happens only when the
caller asks for it (`create=False`); a failed stream there cannot be undone and is reported.

Every upload, create or overwrite, is probed once its bytes are in (`image_probe`: libvirt's
refreshed volume XML plus the header read back through libvirt): an image naming a backing
or external data file, or not of the declared format, is refused and its volume deleted,
the overwritten one too, so no such image stays where a VM or a clone would follow it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import libvirt

from kvmmanager.core.errors import Cancelled, Conflict, InvalidInput, KvmmError
from kvmmanager.services.storage import image_probe
from kvmmanager.services.storage.calls import StorageCalls
from kvmmanager.services.storage.specs import VOLUME_NAME_MAX, check_name, check_size
from kvmmanager.services.storage.xml import (
    VolumeDetails,
    active_pool,
    build_volume_xml,
    lookup_volume,
    volume_exists,
)
from kvmmanager.virt.calls import CallKind

CHUNK_SIZE = 1 << 20
# The largest volume one upload may declare (16 TiB): beyond that the size is a typo.
MAX_UPLOAD_BYTES = 16 << 40

ProgressFn = Callable[[int, int | None], Awaitable[None] | None]
CancelledFn = Callable[[], bool]
UploadSource = str | os.PathLike[str] | Iterable[bytes] | AsyncIterator[bytes]


class RunsOnHost(Protocol):
    """What transfer needs from a HostConnection: run a blocking call on its workers."""

    async def run(
        self, fn: Callable[..., Any], *args: Any, kind: CallKind | None = None
    ) -> Any: ...


@dataclass(slots=True)
class TransferResult:
    bytes: int
    created: bool


async def _report(progress: ProgressFn | None, done: int, total: int | None) -> None:
    if progress is None:
        return
    result = progress(done, total)
    if inspect.isawaitable(result):
        await result


def _check_cancel(cancelled: CancelledFn | None) -> None:
    if cancelled is not None and cancelled():
        raise Cancelled("the transfer was cancelled")


def _send_all(stream: libvirt.virStream, data: bytes) -> None:
    # A blocking stream normally takes everything; loop anyway, send() may write less.
    while data:
        sent = stream.send(data)
        if sent < 0:
            raise KvmmError("libvirt stream refused data")
        data = data[sent:]


async def iter_source(source: UploadSource, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
    """Yield chunks of about `chunk_size` from a path, a sync iterable or an async iterator.

    Files are read in a thread one chunk at a time (never whole); small chunks from
    iterators (an HTTP body arrives in ~64 KiB pieces) are coalesced.
    """
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as fh:  # noqa: ASYNC230 - reads below run in a thread
            while chunk := await asyncio.to_thread(fh.read, chunk_size):
                yield chunk
        return
    buf = bytearray()
    if hasattr(source, "__aiter__"):
        async for piece in source:
            buf += piece
            if len(buf) >= chunk_size:
                yield bytes(buf)
                buf.clear()
    else:
        for piece in source:
            buf += piece
            if len(buf) >= chunk_size:
                yield bytes(buf)
                buf.clear()
    if buf:
        yield bytes(buf)


def source_size(source: UploadSource) -> int | None:
    """The byte size of a path source, None for iterators (the caller must declare it)."""
    if isinstance(source, str | os.PathLike):
        try:
            return Path(source).stat().st_size
        except OSError as exc:
            raise InvalidInput(f"cannot read {source}: {exc.strerror}", field="source") from exc
    return None


async def upload_stream(
    host: RunsOnHost,
    conn: libvirt.virConnect,
    vol: libvirt.virStorageVol,
    source: UploadSource,
    size: int,
    *,
    created: bool,
    progress: ProgressFn | None = None,
    cancelled: CancelledFn | None = None,
) -> TransferResult:
    """Send exactly `size` bytes from `source` into `vol`, from offset 0.

    `created` says the caller made `vol` for this upload: then any failure deletes it.
    """
    done = 0
    stream: libvirt.virStream | None = None
    try:
        _check_cancel(cancelled)
        stream = await host.run(conn.newStream, 0, kind="lifecycle")
        await host.run(vol.upload, stream, 0, size, 0, kind="lifecycle")
        await _report(progress, 0, size)
        async with contextlib.aclosing(iter_source(source)) as chunks:
            async for chunk in chunks:
                _check_cancel(cancelled)
                if done + len(chunk) > size:
                    raise InvalidInput(
                        f"the upload sent more than the declared {size} bytes", field="size"
                    )
                await host.run(_send_all, stream, chunk, kind="lifecycle")
                done += len(chunk)
                await _report(progress, done, size)
        if done != size:
            raise InvalidInput(
                f"the upload ended after {done} of the declared {size} bytes", field="size"
            )
        _check_cancel(cancelled)
        await host.run(stream.finish, kind="lifecycle")
        stream = None
    except BaseException:
        # Shielded so a cancelled request (client gone) still cleans up fully.
        await asyncio.shield(_cleanup_upload(host, stream, vol if created else None))
        raise
    return TransferResult(bytes=done, created=created)


async def _cleanup_upload(
    host: RunsOnHost, stream: libvirt.virStream | None, vol: libvirt.virStorageVol | None
) -> None:
    if stream is not None:
        with contextlib.suppress(Exception):
            await host.run(stream.abort, kind="lifecycle")
    if vol is not None:
        with contextlib.suppress(Exception):
            await host.run(vol.delete, 0, kind="lifecycle")


class Download:
    """An opened download: `size` is the byte count expected, `chunks()` yields the bytes.

    Opened before any byte is sent so that errors (unknown volume, host down) surface as a
    proper error response instead of a truncated body. Always consume or `aclose()` it.
    """

    def __init__(self, host: RunsOnHost, stream: libvirt.virStream, size: int) -> None:
        self._host = host
        self._stream: libvirt.virStream | None = stream
        self.size = size
        self.done = 0

    async def chunks(
        self,
        chunk_size: int = CHUNK_SIZE,
        progress: ProgressFn | None = None,
        cancelled: CancelledFn | None = None,
    ) -> AsyncIterator[bytes]:
        try:
            while self._stream is not None:
                _check_cancel(cancelled)
                data = await self._host.run(self._stream.recv, chunk_size, kind="lifecycle")
                if isinstance(data, int):
                    # -2 means "would block", only possible on non-blocking streams.
                    raise KvmmError(f"libvirt stream receive failed ({data})")
                if not data:
                    stream, self._stream = self._stream, None
                    await self._host.run(stream.finish, kind="lifecycle")
                    break
                self.done += len(data)
                await _report(progress, self.done, self.size)
                yield data
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await asyncio.shield(_abort(self._host, stream))


async def _abort(host: RunsOnHost, stream: libvirt.virStream) -> None:
    with contextlib.suppress(Exception):
        await host.run(stream.abort, kind="lifecycle")


def _download_size(vol: libvirt.virStorageVol) -> int:
    # A download delivers the volume's bytes as stored: the file size for file volumes
    # (a qcow2 file is smaller than its capacity), the capacity for block volumes.
    try:
        _type, capacity, physical = vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)
    except libvirt.libvirtError:
        _type, capacity, physical = vol.info()
    return int(physical or capacity)


async def open_download(
    host: RunsOnHost, conn: libvirt.virConnect, vol: libvirt.virStorageVol
) -> Download:
    size = await host.run(_download_size, vol, kind="read")
    stream = await host.run(conn.newStream, 0, kind="lifecycle")
    try:
        await host.run(vol.download, stream, 0, 0, 0, kind="lifecycle")
    except BaseException:
        await asyncio.shield(_abort(host, stream))
        raise
    return Download(host, stream, size)


async def download_to_file(
    download: Download,
    path: str | os.PathLike[str],
    *,
    progress: ProgressFn | None = None,
    cancelled: CancelledFn | None = None,
) -> int:
    """Write a download into a local file; a failed or cancelled one leaves no file."""
    target = Path(path)
    partial = target.with_name(target.name + ".part")
    try:
        with open(partial, "wb") as fh:  # noqa: ASYNC230 - writes below run in a thread
            async for chunk in download.chunks(progress=progress, cancelled=cancelled):
                await asyncio.to_thread(fh.write, chunk)
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return download.done


# ---- service level: names in, libvirt objects resolved on the host's workers -----------

UPLOAD_FORMATS = ("raw", "iso", "qcow2")


def _check_upload_args(name: str, size: int | None, format: str) -> int:
    check_name(name, "volume", VOLUME_NAME_MAX)
    if format not in UPLOAD_FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(UPLOAD_FORMATS)}", field="format")
    if size is None:
        raise InvalidInput("size is required when uploading from a stream", field="size")
    return check_size(size, "size", maximum=MAX_UPLOAD_BYTES)


async def check_upload(
    storage: StorageCalls,
    host: str,
    pool: str,
    name: str,
    *,
    size: int,
    create: bool,
    format: str,
) -> None:
    """Raise what `upload_volume` would fail with before any byte moves (404/409/422)."""
    _check_upload_args(name, size, format)

    def op(conn: libvirt.virConnect) -> str | None:
        p = active_pool(conn, pool)
        if create:
            if volume_exists(p, name):
                raise Conflict(f"volume '{name}' already exists in pool '{pool}'", field="volume")
            return None
        return lookup_volume(p, name).path()

    path = await storage._call(host, op, kind="read")
    if path is not None:
        _refuse_running(storage, host, pool, name, path)


def _refuse_running(storage: StorageCalls, host: str, pool: str, name: str, path: str) -> None:
    # Overwriting a disk under a running guest corrupts it.
    running = storage.volume_path_in_use_by(host, path, pool=pool, volume=name, running_only=True)
    if running:
        raise Conflict(
            f"volume '{name}' is in use by running VM(s): {', '.join(running)}", field="volume"
        )


async def upload_volume(
    storage: StorageCalls,
    host: str,
    pool: str,
    name: str,
    source: UploadSource,
    *,
    size: int | None = None,
    create: bool = False,
    format: str = "raw",
    progress: ProgressFn | None = None,
    cancelled: CancelledFn | None = None,
) -> VolumeDetails:
    """Stream `source` (a local path, or an iterator of chunks plus `size`) into a volume.

    `create` makes a new volume sized for the data (409 if it exists) and deletes it again
    on any failure; without it the existing volume is overwritten from offset 0, which the
    caller asked for explicitly. A new volume is always created raw: libvirt probes the
    real format (qcow2, iso) once the bytes are in, and `image_probe.upload_refusal` then
    holds it to `format` (raw and iso: plain bytes; qcow2: a flat qcow2 image).
    """
    known = source_size(source)
    size = _check_upload_args(name, size if size is not None else known, format)
    if known is not None and known != size:
        raise InvalidInput(f"size {size} differs from the file's {known} bytes", field="size")
    h = storage._host(host)

    def prepare(conn: libvirt.virConnect) -> tuple[libvirt.virStorageVol, str]:
        p = active_pool(conn, pool)
        if create:
            if volume_exists(p, name):
                raise Conflict(f"volume '{name}' already exists in pool '{pool}'", field="volume")
            return p.createXML(build_volume_xml(name, size, "raw"), 0), ""
        vol = lookup_volume(p, name)
        return vol, vol.path()

    vol, path = await h.run(lambda: prepare(h.conn), kind="lifecycle")
    if not create:
        _refuse_running(storage, host, pool, name, path)
    await upload_stream(
        h, h.conn, vol, source, size, created=create, progress=progress, cancelled=cancelled
    )
    try:
        probe = await h.run(image_probe.probe_volume, h.conn, pool, name, kind="lifecycle")
        problem = image_probe.upload_refusal(probe, format)
        if problem:
            if not create:
                # The old bytes are gone already; what is there now must not stay
                # where a VM or a clone would follow it.
                problem += f"; the overwritten volume '{name}' was deleted"
            raise InvalidInput(problem, field="format")
        details = await storage.get_volume(host, pool, name)
    except BaseException:
        # Fail closed, overwrite included: bytes nobody could check are never kept.
        await asyncio.shield(_cleanup_upload(h, None, vol))
        if not create:
            await asyncio.shield(_forget_if_gone(storage, host, pool, name))
        await asyncio.shield(storage.sync_pool(host, pool))
        raise
    await storage.sync_pool(host, pool)
    return details


async def _forget_if_gone(storage: StorageCalls, host: str, pool: str, name: str) -> None:
    """A deleted overwritten volume takes its owner record along: a later volume of that
    name is not that user's. Kept while the volume is still there (its delete failed)."""
    with contextlib.suppress(Exception):
        exists = await storage._call(
            host, lambda conn: volume_exists(active_pool(conn, pool), name), kind="read"
        )
        if not exists:
            storage.ownership.forget_volume(host, pool, name)


async def open_volume_download(
    storage: StorageCalls, host: str, pool: str, name: str
) -> tuple[VolumeDetails, Download]:
    details = await storage.get_volume(host, pool, name)
    h = storage._host(host)
    vol = await h.run(lambda: lookup_volume(active_pool(h.conn, pool), name), kind="read")
    refusal = await h.run(image_probe.chain_refusal, h.conn, vol, kind="read")
    if refusal:
        raise InvalidInput(f"volume '{name}' cannot be downloaded: {refusal}", field="volume")
    return details, await open_download(h, h.conn, vol)
