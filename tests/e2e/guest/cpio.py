"""A minimal writer for the kernel's initramfs format (cpio "newc").

Written in Python rather than calling `cpio` so the archive can hold a /dev/console
character device without root, and so the output is byte-reproducible (fixed owner,
mode and mtime for every entry, entries sorted).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


class CpioWriter:
    """Appends entries to a newc archive; `close()` writes the trailer."""

    def __init__(self, out: BinaryIO, mtime: int = 0) -> None:
        self._out = out
        self._ino = 1
        self._mtime = mtime
        self._written = 0

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        encoded = name.encode() + b"\0"
        fields = [
            self._ino,
            mode,
            0,  # uid: root
            0,  # gid: root
            1,  # nlink
            self._mtime,
            len(data),
            0,  # dev major
            0,  # dev minor
            rdev[0],
            rdev[1],
            len(encoded),
            0,  # checksum (unused by newc)
        ]
        self._ino += 1
        header = _MAGIC + b"".join(b"%08X" % f for f in fields)
        self._write(header + encoded)
        self._pad()
        if data:
            self._write(data)
            self._pad()

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._written += len(data)

    def _pad(self) -> None:
        self._write(b"\0" * (-self._written % 4))

    def add_dir(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm)

    def add_file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def add_symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def add_chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def add_tree(self, root: Path) -> int:
        """Adds every directory, file and symlink under `root` (paths relative to it).

        Returns the number of entries. Directories come before their content because
        the kernel creates entries in archive order.
        """
        count = 0
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            base = Path(dirpath)
            rel_dir = base.relative_to(root).as_posix()
            if rel_dir != ".":
                self.add_dir(rel_dir, stat.S_IMODE(base.stat().st_mode))
                count += 1
            # os.walk lists symlinks to directories in dirnames: archive them as links.
            for name in sorted(filenames + [d for d in dirnames if (base / d).is_symlink()]):
                path = base / name
                rel = path.relative_to(root).as_posix()
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode):
                    self.add_symlink(rel, os.readlink(path))
                elif stat.S_ISREG(st.st_mode):
                    self.add_file(rel, path.read_bytes(), stat.S_IMODE(st.st_mode))
                else:
                    continue
                count += 1
            dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]
        return count

    def close(self) -> None:
        self._entry(_TRAILER, 0)
        self._pad()
