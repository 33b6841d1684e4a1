"""fsfreeze_freeze / thaw / status, with an automatic thaw.

A host that freezes and then disappears must never leave the guest frozen: every freeze
arms a timer that thaws everything. The backend is swappable because real FIFREEZE
needs a real block filesystem and root; tests use a fake one. Note: a log_file on a
frozen filesystem would block the agent's logging; log to stderr/journald when
freezing is used.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time

from .. import protocol
from ..errors import AgentError, failed, invalid
from ..log import log
from .system import mounts

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional


FIFREEZE = 0xC0045877
FITHAW = 0xC0045878


# Read-only media cannot be frozen (FIFREEZE answers EOPNOTSUPP), and need not be: like
# qemu-ga, a default freeze leaves them out instead of failing on a mounted CD-ROM.
NOT_FREEZABLE = frozenset({"iso9660", "udf", "squashfs", "erofs", "cramfs"})


class IoctlBackend:
    def freezable(self) -> List[str]:
        return [
            m["mount_point"]
            for m in mounts()
            if m["device"].startswith("/dev/")
            and not m.get("read_only")
            and m["fs_type"] not in NOT_FREEZABLE
        ]

    def _ioctl(self, mount_point: str, request: int) -> None:
        fd = os.open(mount_point, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(fd, request, 0)
        finally:
            os.close(fd)

    def freeze(self, mount_point: str) -> None:
        self._ioctl(mount_point, FIFREEZE)

    def thaw(self, mount_point: str) -> None:
        self._ioctl(mount_point, FITHAW)


class Freezer:
    def __init__(self, max_timeout: float, backend: Any = None) -> None:
        self.max_timeout = max_timeout
        self.backend = backend or IoctlBackend()
        self.lock = threading.RLock()
        self.frozen: List[str] = []
        self.deadline: Optional[float] = None
        self.timer: Optional[threading.Timer] = None

    def is_frozen(self) -> bool:
        return bool(self.frozen)

    def freeze(self, mount_points: Optional[List[str]], timeout: float) -> Dict[str, Any]:
        with self.lock:
            if self.frozen:
                raise failed("filesystems are already frozen", "mount_points")
            available = self.backend.freezable()
            targets = available if mount_points is None else list(mount_points)
            for mp in targets:
                if not isinstance(mp, str) or mp not in available:
                    raise invalid("%r is not a freezable mount point" % (mp,), "mount_points")
            # Deepest mounts first: freezing / before /var would block the /var freeze.
            for mp in sorted(targets, key=len, reverse=True):
                try:
                    self.backend.freeze(mp)
                except OSError as exc:
                    if mount_points is None and exc.errno == errno.EOPNOTSUPP:
                        log.info("skipping %s: its filesystem cannot be frozen", mp)
                        continue
                    self._thaw_locked()
                    raise failed(
                        "freezing %s failed: %s" % (mp, exc.strerror), "mount_points"
                    ) from None
                self.frozen.append(mp)
            timeout = min(timeout, self.max_timeout)
            self.deadline = time.time() + timeout
            self.timer = threading.Timer(timeout, self.auto_thaw)
            self.timer.daemon = True
            self.timer.start()
            return {
                "frozen": len(self.frozen),
                "mount_points": list(self.frozen),
                "thaw_deadline": self.deadline,
            }

    def auto_thaw(self) -> None:
        with self.lock:
            if self.frozen:
                log.warning("automatic thaw after the freeze timeout: %s", self.frozen)
                self._thaw_locked()

    def _thaw_locked(self) -> List[str]:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        thawed, errors = [], []
        for mp in reversed(self.frozen):
            try:
                self.backend.thaw(mp)
                thawed.append(mp)
            except OSError as exc:
                errors.append("%s: %s" % (mp, exc.strerror))
        self.frozen = []
        self.deadline = None
        if errors:
            log.error("thaw errors: %s", "; ".join(errors))
        return thawed

    def thaw(self) -> Dict[str, Any]:
        with self.lock:
            thawed = self._thaw_locked()
            return {"thawed": len(thawed), "mount_points": thawed}

    def status(self) -> Dict[str, Any]:
        with self.lock:
            return {
                "status": "frozen" if self.frozen else "thawed",
                "mount_points": list(self.frozen),
                "thaw_deadline": self.deadline,
            }


def fsfreeze_freeze(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    try:
        result: Dict[str, Any] = ctx.freezer.freeze(
            params["mount_points"], params["timeout_seconds"]
        )
        return result
    except PermissionError:
        raise AgentError(
            protocol.PERMISSION_DENIED, "freezing needs root", "mount_points"
        ) from None


def fsfreeze_thaw(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    result: Dict[str, Any] = ctx.freezer.thaw()
    return result


def fsfreeze_status(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    result: Dict[str, Any] = ctx.freezer.status()
    return result


HANDLERS = {
    "fsfreeze_freeze": fsfreeze_freeze,
    "fsfreeze_thaw": fsfreeze_thaw,
    "fsfreeze_status": fsfreeze_status,
}
