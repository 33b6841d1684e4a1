"""ssh_authorized_keys: list, add or remove a user's public keys.

The file is replaced atomically (temp file + rename in ~/.ssh) and every component is
opened without following symlinks, so a user who plants a symlink at ~/.ssh or
authorized_keys cannot make the (root) agent write elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import os
import pwd

from ..errors import denied, failed, invalid, not_found

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple


_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
KEY_TYPES = ("ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-")


def key_identity(line: str) -> Optional[Tuple[str, str]]:
    """(type, base64 blob) of an authorized_keys line, skipping any options before them."""
    fields = line.split()
    for i, f in enumerate(fields[:-1]):
        if f.startswith(KEY_TYPES):
            try:
                base64.b64decode(fields[i + 1].encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError):
                return None
            return f, fields[i + 1]
    return None


def _ssh_dir(user: pwd.struct_passwd, create: bool) -> Optional[int]:
    home = os.open(os.path.realpath(user.pw_dir), _NOFOLLOW_DIR)
    try:
        try:
            return os.open(".ssh", _NOFOLLOW_DIR, dir_fd=home)
        except FileNotFoundError:
            if not create:
                return None
            os.mkdir(".ssh", 0o700, dir_fd=home)
            fd = os.open(".ssh", _NOFOLLOW_DIR, dir_fd=home)
            os.fchown(fd, user.pw_uid, user.pw_gid)
            return fd
    finally:
        os.close(home)


def _read(dirfd: Optional[int]) -> List[str]:
    if dirfd is None:
        return []
    try:
        fd = os.open("authorized_keys", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    except FileNotFoundError:
        return []
    with os.fdopen(fd, "rb") as fh:
        return fh.read(4 * 1024 * 1024).decode("utf-8", "replace").splitlines()


def _write(dirfd: int, user: pwd.struct_passwd, lines: List[str]) -> None:
    tmp = "authorized_keys.kvmm-tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dirfd)
    fd = os.open(
        tmp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=dirfd,
    )
    with os.fdopen(fd, "wb") as fh:
        fh.write(("\n".join(lines) + "\n").encode("utf-8") if lines else b"")
        os.fchown(fh.fileno(), user.pw_uid, user.pw_gid)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, "authorized_keys", src_dir_fd=dirfd, dst_dir_fd=dirfd)


def ssh_authorized_keys(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    try:
        user = pwd.getpwnam(params["user"])
    except KeyError:
        raise not_found("no user %r" % params["user"], "user") from None
    action = params["action"]
    key = params["key"]
    ident = None
    if action != "list":
        if not key or "\n" in key or "\r" in key or "\x00" in key:
            raise invalid("'key' must be one public key line", "key")
        ident = key_identity(key)
        if ident is None:
            raise invalid("'key' is not an OpenSSH public key", "key")
    try:
        dirfd = _ssh_dir(user, create=action == "add")
        try:
            lines = _read(dirfd)
            changed = False
            if action == "add" and all(key_identity(line) != ident for line in lines):
                lines.append(key.strip())
                changed = True
            elif action == "remove":
                kept = [line for line in lines if key_identity(line) != ident]
                changed = len(kept) != len(lines)
                lines = kept
            if changed and dirfd is not None:
                _write(dirfd, user, lines)
        finally:
            if dirfd is not None:
                os.close(dirfd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise denied("~/.ssh or authorized_keys is a symlink; refusing", "user") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise denied(
                "cannot access the keys of %s: %s" % (user.pw_name, exc.strerror), "user"
            ) from None
        raise failed("authorized_keys: %s" % exc.strerror, "user") from None
    keys = [line for line in lines if key_identity(line) is not None]
    return {"keys": keys, "changed": changed}


HANDLERS = {"ssh_authorized_keys": ssh_authorized_keys}
