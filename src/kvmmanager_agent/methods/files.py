"""file_read, file_write, file_stat: whole small files inside the allowed paths."""

from __future__ import annotations

import base64
import binascii
import os
import stat

from .. import jail
from ..errors import failed, invalid

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict


def parse_mode(value: Any, default: int) -> int:
    if value is None:
        return default
    try:
        mode = int(value, 8)
    except ValueError:
        raise invalid("permissions must be an octal string such as '0644'", "permissions") from None
    if not 0 <= mode <= 0o7777:
        raise invalid("permissions out of range", "permissions")
    return mode


def read_all(fd: int, limit: int) -> bytes:
    chunks = []
    total = 0
    while True:
        chunk = os.read(fd, min(1 << 20, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise failed("file is larger than the %d byte limit of file_read" % limit, "path")
    return b"".join(chunks)


def file_read(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    limit = ctx.config.max_file_bytes
    fd = jail.open_file(params["path"], ctx.config.allowed_read_paths, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size > limit:
            raise failed("file is larger than the %d byte limit of file_read" % limit, "path")
        data = read_all(fd, limit)
    finally:
        os.close(fd)
    if params["encoding"] == "base64":
        content = base64.b64encode(data).decode("ascii")
    else:
        try:
            content = data.decode("utf-8")
        except UnicodeDecodeError:
            raise failed("file is not valid UTF-8; use encoding 'base64'", "encoding") from None
    return {"content": content, "size_bytes": len(data), "encoding": params["encoding"]}


def decode_content(content: str, encoding: str, field: str = "content") -> bytes:
    if encoding == "base64":
        try:
            return base64.b64decode(content.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise invalid("'%s' is not valid base64" % field, field) from None
    try:
        return content.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid("'%s' is not valid UTF-8 text" % field, field) from None


def file_write(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    data = decode_content(params["content"], params["encoding"])
    if len(data) > ctx.config.max_file_bytes:
        raise invalid("content exceeds the %d byte limit" % ctx.config.max_file_bytes, "content")
    mode = parse_mode(params["permissions"], 0o644)
    fd = jail.open_file(
        params["path"],
        ctx.config.allowed_write_paths,
        os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
        mode,
        params["create_dirs"],
    )
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if params["permissions"] is not None:
            os.fchmod(fd, mode)
    except OSError as exc:
        raise failed("write failed: %s" % exc.strerror, "path") from None
    finally:
        os.close(fd)
    return {"bytes_written": len(data), "path": params["path"]}


def sha256_fd(fd: int) -> str:
    import hashlib  # loads OpenSSL: only when a transfer needs it

    digest = hashlib.sha256()
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)
        offset += len(chunk)


def file_stat(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    roots = ctx.config.allowed_read_paths + ctx.config.allowed_write_paths
    st = jail.lstat(params["path"], roots)
    kind = (
        "file" if stat.S_ISREG(st.st_mode) else "directory" if stat.S_ISDIR(st.st_mode) else "other"
    )
    digest = None
    if params["sha256"] and kind == "file":
        fd = jail.open_file(params["path"], roots, os.O_RDONLY)
        try:
            digest = sha256_fd(fd)
        finally:
            os.close(fd)
    return {
        "size_bytes": st.st_size,
        "type": kind,
        "mode": "%04o" % stat.S_IMODE(st.st_mode),
        "mtime": st.st_mtime,
        "sha256": digest,
    }


HANDLERS = {"file_read": file_read, "file_write": file_write, "file_stat": file_stat}
