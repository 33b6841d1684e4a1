"""Chunked transfer of files of any size: file_open, file_read_chunk, file_write_chunk, file_close.

Chunks carry explicit offsets, so a host that lost its connection reopens the file
with `resume` and continues from `size_bytes`; file_close returns the sha256 of the
whole file so the host verifies end to end.
"""

from __future__ import annotations

import base64
import itertools
import os
import threading
import time
from typing import Any, Dict

from .. import jail, protocol
from ..errors import AgentError, failed, invalid, not_found
from .files import decode_content, parse_mode, sha256_fd

IDLE_SECONDS = 600


class Handle:
    __slots__ = ("fd", "lock", "mode", "path", "used")

    def __init__(self, fd: int, mode: str, path: str) -> None:
        self.fd = fd
        self.mode = mode
        self.path = path
        self.used = time.monotonic()
        self.lock = threading.Lock()


class TransferTable:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.handles = {}  # type: Dict[int, Handle]
        self.ids = itertools.count(1)

    def add(self, handle: Handle) -> int:
        with self.lock:
            now = time.monotonic()
            # A host that vanished mid-transfer must not pin descriptors forever.
            for hid, h in list(self.handles.items()):
                if now - h.used > IDLE_SECONDS:
                    os.close(h.fd)
                    del self.handles[hid]
            if len(self.handles) >= protocol.MAX_OPEN_HANDLES:
                os.close(handle.fd)
                raise AgentError(protocol.BUSY, "too many open transfer handles", "handle")
            hid = next(self.ids)
            self.handles[hid] = handle
            return hid

    def get(self, hid: int) -> Handle:
        with self.lock:
            h = self.handles.get(hid)
        if h is None:
            raise not_found("no open transfer handle %d" % hid, "handle")
        h.used = time.monotonic()
        return h

    def pop(self, hid: int) -> Handle:
        with self.lock:
            h = self.handles.pop(hid, None)
        if h is None:
            raise not_found("no open transfer handle %d" % hid, "handle")
        return h

    def close_all(self) -> None:
        with self.lock:
            for h in self.handles.values():
                os.close(h.fd)
            self.handles.clear()


def file_open(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    cfg = ctx.config
    if params["mode"] == "r":
        fd = jail.open_file(params["path"], cfg.allowed_read_paths, os.O_RDONLY)
    else:
        if ctx.freezer.is_frozen():
            raise AgentError(protocol.PERMISSION_DENIED, "writing is refused while frozen", "mode")
        flags = os.O_RDWR | os.O_CREAT | (0 if params["resume"] else os.O_TRUNC)
        mode = parse_mode(params["permissions"], 0o644)
        fd = jail.open_file(
            params["path"], cfg.allowed_write_paths, flags, mode, params["create_dirs"]
        )
    size = os.fstat(fd).st_size
    hid = ctx.transfers.add(Handle(fd, params["mode"], params["path"]))
    return {"handle": hid, "size_bytes": size, "max_chunk_bytes": protocol.MAX_CHUNK_BYTES}


def file_read_chunk(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    h = ctx.transfers.get(params["handle"])
    with h.lock:
        try:
            data = os.pread(h.fd, params["length"], params["offset"])
            size = os.fstat(h.fd).st_size
        except OSError as exc:
            raise failed("read failed: %s" % exc.strerror, "handle") from None
    return {
        "data": base64.b64encode(data).decode("ascii"),
        "offset": params["offset"],
        "length": len(data),
        "eof": params["offset"] + len(data) >= size,
    }


def file_write_chunk(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    h = ctx.transfers.get(params["handle"])
    if h.mode != "w":
        raise invalid("handle %d was opened for reading" % params["handle"], "handle")
    data = decode_content(params["data"], "base64", "data")
    if len(data) > protocol.MAX_CHUNK_BYTES:
        raise invalid("chunk larger than %d bytes" % protocol.MAX_CHUNK_BYTES, "data")
    with h.lock:
        size = os.fstat(h.fd).st_size
        if params["offset"] > size:
            raise invalid("offset %d is past the end (%d)" % (params["offset"], size), "offset")
        try:
            view = memoryview(data)
            offset = params["offset"]
            while view:
                n = os.pwrite(h.fd, view, offset)
                view = view[n:]
                offset += n
            size = os.fstat(h.fd).st_size
        except OSError as exc:
            raise failed("write failed: %s" % exc.strerror, "handle") from None
    return {"written": len(data), "size_bytes": size}


def file_close(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    h = ctx.transfers.pop(params["handle"])
    with h.lock:
        try:
            if h.mode == "w":
                os.fsync(h.fd)
            size = os.fstat(h.fd).st_size
            digest = sha256_fd(h.fd)
        except OSError as exc:
            raise failed("close failed: %s" % exc.strerror, "handle") from None
        finally:
            os.close(h.fd)
    return {"size_bytes": size, "sha256": digest}


HANDLERS = {
    "file_open": file_open,
    "file_read_chunk": file_read_chunk,
    "file_write_chunk": file_write_chunk,
    "file_close": file_close,
}
