"""Path checks: every file the agent touches is opened inside an allowed root.

The walk opens each directory below the root with O_NOFOLLOW relative to its parent's
descriptor, so a symlink anywhere below the root (planted before or during the call)
cannot lead out of it, and the final component is opened with O_NOFOLLOW too: no
reading or writing through a symlink. `..` is refused outright rather than resolved.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from .errors import AgentError, denied, failed, invalid, not_found

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Sequence, Tuple


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def split_path(path: str, field: str = "path") -> List[str]:
    if not path.startswith("/"):
        raise invalid("'%s' must be an absolute path" % field, field)
    if "\x00" in path:
        raise invalid("'%s' contains a NUL byte" % field, field)
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise denied("'..' is not allowed in '%s'" % field, field)
    return parts


def _root_for(parts: List[str], roots: Sequence[str]) -> Tuple[str, List[str]]:
    best: Optional[Tuple[str, List[str]]] = None
    for root in roots:
        rparts = [p for p in root.split("/") if p not in ("", ".")]
        if parts[: len(rparts)] == rparts and (best is None or len(rparts) > len(best[1])):
            best = (root, rparts)
    if best is None:
        raise denied("path is outside the allowed paths", "path")
    return best[0], parts[len(best[1]) :]


def _os_error(exc: OSError, what: str) -> AgentError:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR) or exc.errno == errno.EMLINK:
        return denied("%s: symlinks are not followed" % what, "path")
    if exc.errno == errno.ENOENT:
        return not_found("%s: no such file or directory" % what, "path")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return denied("%s: %s" % (what, exc.strerror), "path")
    return failed("%s: %s" % (what, exc.strerror), "path")


def open_parent(path: str, roots: Sequence[str], create_dirs: bool = False) -> Tuple[int, str]:
    """Return (descriptor of the parent directory, final name); the caller closes it."""
    parts = split_path(path)
    root, rel = _root_for(parts, roots)
    if not rel:
        raise denied("the allowed root itself cannot be opened as a file", "path")
    try:
        # The root is the admin's choice and may itself be a symlink (e.g. /var/run).
        fd = os.open(os.path.realpath(root), _DIR_FLAGS)
    except OSError as exc:
        raise _os_error(exc, "allowed root %s" % root) from None
    try:
        for name in rel[:-1]:
            try:
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create_dirs:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except OSError as exc:
        os.close(fd)
        raise _os_error(exc, path) from None
    return fd, rel[-1]


def open_file(
    path: str,
    roots: Sequence[str],
    flags: int,
    mode: int = 0o644,
    create_dirs: bool = False,
) -> int:
    """Open a regular file inside `roots` without following any symlink below the root.

    An allowed entry may itself name a file (e.g. /etc/os-release): that exact path is
    the admin's choice and is opened as configured, symlink or not.
    """
    root, rel = _root_for(split_path(path), roots)
    # O_NONBLOCK so a FIFO planted at the path cannot hang the open.
    flags |= os.O_CLOEXEC | os.O_NONBLOCK
    if not rel:
        try:
            fd = os.open(os.path.realpath(root), flags, mode)
        except OSError as exc:
            raise _os_error(exc, path) from None
    else:
        parent, name = open_parent(path, roots, create_dirs)
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW, mode, dir_fd=parent)
        except OSError as exc:
            raise _os_error(exc, path) from None
        finally:
            os.close(parent)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise denied("%s is not a regular file" % path, "path")
    os.set_blocking(fd, True)
    return fd


def lstat(path: str, roots: Sequence[str]) -> os.stat_result:
    parts = split_path(path)
    root, rel = _root_for(parts, roots)
    if not rel:
        return os.stat(os.path.realpath(root))
    parent, name = open_parent(path, roots)
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except OSError as exc:
        raise _os_error(exc, path) from None
    finally:
        os.close(parent)
