"""Chunked transfer of files of any size: file_open, file_read_chunk, file_write_chunk, file_close.

Chunks carry explicit offsets, so a host that lost its connection reopens the file
with `resume` and continues from `size_bytes`; file_close returns the sha256 of the
whole file so the host verifies end to end.

Writes go to a hidden sibling, `.NAME.kvmm-part`, renamed over NAME by file_close: a
transfer that dies half-way (the agent killed, the guest reset, the host gone) never
leaves a truncated file in the final place, only the part file, which a `resume`
continues. `file_close` with `abort` closes without the rename (the host's error path).
A path that is itself an allowed entry (a file the admin named) is written in place.
"""

from __future__ import annotations

import base64
import contextlib
import os
import stat
import threading
import time
from typing import Any, Dict, Optional

from .. import jail, protocol
from ..dispatcher import PAYLOAD, RAW_REPLY
from ..errors import AgentError, denied, failed, invalid, not_found
from .files import decode_content, parse_mode, sha256_fd

IDLE_SECONDS = 600


PART_SUFFIX = ".kvmm-part"
NAME_MAX = 255


class Handle:
    __slots__ = (
        "closed", "digest", "dir_fd", "end", "fd", "lock", "mode", "name", "part", "path",
        "turn", "used", "waiting",
    )  # fmt: skip

    def __init__(
        self, fd: int, mode: str, path: str, dir_fd: int = -1, name: str = "", part: str = ""
    ) -> None:
        self.fd = fd
        self.mode = mode
        self.path = path
        # Writes through a part file: the parent directory and both names, for the rename.
        self.dir_fd = dir_fd
        self.name = name
        self.part = part
        self.used = time.monotonic()
        self.lock = threading.Lock()
        # Writes apply in offset order: `end` is where the next one must start, and a
        # write that overtook its predecessor on the worker pool waits for its `turn`.
        self.turn = threading.Condition(self.lock)
        self.waiting = 0  # writes waiting for their turn (observable: tests, diagnostics)
        self.end = 0
        self.closed = False
        # sha256 of bytes 0..end as they were written (a write handle that started empty):
        # file_close then needs no second pass over the file. None: hash the file at close.
        self.digest = None  # type: Any

    def start_digest(self) -> None:
        if self.end == 0:
            import hashlib  # OpenSSL: only once a transfer needs it

            self.digest = hashlib.sha256()

    def close(self) -> None:
        self.closed = True
        os.close(self.fd)
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1


HANDLE_MASK = (1 << 53) - 1


class TransferTable:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.handles = {}  # type: Dict[int, Handle]

    def add(self, handle: Handle) -> int:
        with self.lock:
            now = time.monotonic()
            # A host that vanished mid-transfer must not pin descriptors forever.
            for hid, h in list(self.handles.items()):
                if now - h.used > IDLE_SECONDS:
                    h.close()
                    del self.handles[hid]
            if len(self.handles) >= protocol.MAX_OPEN_HANDLES:
                handle.close()
                raise AgentError(protocol.BUSY, "too many open transfer handles", "handle")
            # Unguessable (53 random bits: still an exact number in JavaScript): a handle
            # is the capability to read or write that file, so no one may guess another's.
            hid = 0
            while hid == 0 or hid in self.handles:
                hid = int.from_bytes(os.urandom(7), "big") & HANDLE_MASK
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
                h.close()
            self.handles.clear()


def file_open(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    cfg = ctx.config
    if params["mode"] == "r":
        fd = jail.open_file(params["path"], cfg.allowed_read_paths, os.O_RDONLY)
    else:
        if ctx.freezer.is_frozen():
            raise AgentError(protocol.PERMISSION_DENIED, "writing is refused while frozen", "mode")
        return _open_for_writing(ctx, params)
    size = os.fstat(fd).st_size
    hid = ctx.transfers.add(Handle(fd, params["mode"], params["path"]))
    return {
        "handle": hid,
        "size_bytes": size,
        "max_chunk_bytes": protocol.MAX_CHUNK_BYTES,
        # file_read_chunk takes `binary` (raw bytes after the reply) up to this length.
        "max_binary_chunk_bytes": protocol.MAX_BINARY_CHUNK_BYTES,
    }


def _open_for_writing(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    cfg = ctx.config
    path = params["path"]
    flags = os.O_RDWR | os.O_CREAT | (0 if params["resume"] else os.O_TRUNC)
    mode = parse_mode(params["permissions"], 0o644)
    _root, rel = jail._root_for(jail.split_path(path), cfg.allowed_write_paths)
    name = rel[-1] if rel else ""
    part = "." + name + PART_SUFFIX
    if not rel or len(part.encode()) > NAME_MAX:
        fd = jail.open_file(path, cfg.allowed_write_paths, flags, mode, params["create_dirs"])
        handle = Handle(fd, "w", path)
        handle.end = os.fstat(fd).st_size
        return _opened_for_writing(ctx, handle)
    parent, name = jail.open_parent(path, cfg.allowed_write_paths, params["create_dirs"])
    fd = -1
    try:
        final = _lstat(name, parent)
        if final is not None and not stat.S_ISREG(final.st_mode):
            raise denied("%s is not a regular file" % path, "path")
        if params["resume"] and final is not None and _lstat(part, parent) is None:
            # An earlier transfer that did end (or an older agent wrote in place):
            # continue from its bytes, out of the final place until done.
            os.rename(name, part, src_dir_fd=parent, dst_dir_fd=parent)
        fd = os.open(
            part, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=parent
        )
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise denied("%s is not a regular file" % path, "path")
        os.set_blocking(fd, True)
        if final is not None and params["permissions"] is None:
            # Replacing a file keeps its mode and owner, as writing into it did.
            os.fchmod(fd, stat.S_IMODE(final.st_mode))
            with contextlib.suppress(OSError):
                os.fchown(fd, final.st_uid, final.st_gid)
        handle = Handle(fd, "w", path, parent, name, part)
        handle.end = st.st_size
    except OSError as exc:
        if fd >= 0:
            os.close(fd)
        os.close(parent)
        raise failed("cannot open %s for writing: %s" % (path, exc.strerror), "path") from None
    except BaseException:
        if fd >= 0:
            os.close(fd)
        os.close(parent)
        raise
    return _opened_for_writing(ctx, handle)


def _opened_for_writing(ctx: Any, handle: Handle) -> Dict[str, Any]:
    handle.start_digest()
    hid = ctx.transfers.add(handle)
    # Pipelined writes each hold a worker: leave half the pool to everything else.
    window = max(1, min(protocol.MAX_CHUNKS_IN_FLIGHT, ctx.config.max_concurrent_requests // 2))
    return {
        "handle": hid,
        "size_bytes": handle.end,
        "max_chunk_bytes": protocol.MAX_CHUNK_BYTES,
        "max_binary_chunk_bytes": protocol.MAX_BINARY_CHUNK_BYTES,
        "max_chunks_in_flight": window,
    }


def _lstat(name: str, dir_fd: int) -> Optional[os.stat_result]:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def file_read_chunk(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    if not params["binary"] and params["length"] > protocol.MAX_CHUNK_BYTES:
        raise invalid(
            "length above %d needs binary (a base64 reply must fit one line)"
            % protocol.MAX_CHUNK_BYTES,
            "length",
        )
    h = ctx.transfers.get(params["handle"])
    with h.lock:
        try:
            data = os.pread(h.fd, params["length"], params["offset"])
            size = os.fstat(h.fd).st_size
        except OSError as exc:
            raise failed("read failed: %s" % exc.strerror, "handle") from None
    out = {
        "offset": params["offset"],
        "length": len(data),
        "eof": params["offset"] + len(data) >= size,
    }  # type: Dict[Any, Any]
    if params["binary"]:
        # The transport writes these bytes right after the reply line (dispatcher.encode).
        out["binary_length"] = len(data)
        out[RAW_REPLY] = data
    else:
        out["data"] = base64.b64encode(data).decode("ascii")
    return out


def file_write_chunk(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    h = ctx.transfers.get(params["handle"])
    if h.mode != "w":
        raise invalid("handle %d was opened for reading" % params["handle"], "handle")
    data = _chunk_bytes(params)
    offset = params["offset"]
    with h.turn:
        if offset > h.end:
            # Pipelined writes may overtake each other on the pool: wait for the turn.
            h.waiting += 1
            h.turn.notify_all()  # whoever watches `waiting`
            try:
                h.turn.wait_for(
                    lambda: h.closed or h.end >= offset, protocol.WRITE_ORDER_WAIT_SECONDS
                )
            finally:
                h.waiting -= 1
        if h.closed:
            raise not_found("transfer handle %d was closed" % params["handle"], "handle")
        if offset < h.end:
            raise invalid(
                "offset %d was already written (the file holds %d bytes): a duplicate or "
                "overlapping chunk; continue at %d" % (offset, h.end, h.end),
                "offset",
            )
        if offset > h.end:
            raise invalid(
                "offset %d is past the end (%d): the chunk before it is missing "
                "(writes of one handle must follow each other)" % (offset, h.end),
                "offset",
            )
        try:
            view = memoryview(data)
            while view:
                n = os.pwrite(h.fd, view, offset)
                if h.digest is not None:
                    h.digest.update(view[:n])
                view = view[n:]
                offset += n
        except OSError as exc:
            raise failed("write failed: %s" % exc.strerror, "handle") from None
        finally:
            # What did reach the file counts (a retry continues after it).
            if offset > h.end:
                h.end = offset
            h.turn.notify_all()
        size = h.end
    return {"written": len(data), "size_bytes": size}


def _chunk_bytes(params: Dict[str, Any]) -> Any:
    length = params["binary_length"]
    if (params["data"] is None) == (length is None):
        raise invalid("give exactly one of data (base64) or binary_length", "data")
    if length is None:
        data = decode_content(params["data"], "base64", "data")
        if len(data) > protocol.MAX_CHUNK_BYTES:
            raise invalid("chunk larger than %d bytes" % protocol.MAX_CHUNK_BYTES, "data")
        return data
    raw = params.get(PAYLOAD)
    if raw is None:
        raise invalid(
            "binary_length needs its raw bytes right after a single request line of at most "
            "%d bytes (not in a batch)" % protocol.MAX_BINARY_HEADER_BYTES,
            "binary_length",
        )
    return raw


def file_close(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    h = ctx.transfers.pop(params["handle"])
    with h.turn:
        h.turn.notify_all()  # a write still waiting for its turn gives up now
        try:
            if h.mode == "w":
                os.fsync(h.fd)
            size = os.fstat(h.fd).st_size
            if h.digest is not None and size == h.end:
                digest = h.digest.hexdigest()
            else:  # resumed, read mode, or the file changed beside us: hash what is there
                digest = sha256_fd(h.fd)
            if h.part and not params.get("abort"):
                os.rename(h.part, h.name, src_dir_fd=h.dir_fd, dst_dir_fd=h.dir_fd)
                os.fsync(h.dir_fd)  # the rename itself survives a crash
        except OSError as exc:
            raise failed("close failed: %s" % exc.strerror, "handle") from None
        finally:
            h.close()
    return {"size_bytes": size, "sha256": digest}


HANDLERS = {
    "file_open": file_open,
    "file_read_chunk": file_read_chunk,
    "file_write_chunk": file_write_chunk,
    "file_close": file_close,
}
