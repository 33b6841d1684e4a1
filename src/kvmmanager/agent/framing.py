"""Reply stream -> lines, bounded, with the agent's 0xFF sync marker.

The agent writes 0xFF only immediately before a `sync` reply, at a line boundary, so a
0xFF both ends whatever partial (stale) line we hold and marks the next line as a sync
candidate. 0xFF never occurs inside UTF-8 JSON.
"""

from __future__ import annotations

from kvmmanager.core.errors import GuestError

SYNC = b"\xff"


class LineTooLong(GuestError):
    """The guest sent a line beyond the reply cap: it is flooding or broken."""


class ReplyFramer:
    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._after_sync = False  # the line being assembled followed a 0xFF

    def reset(self) -> None:
        self._buf.clear()
        self._after_sync = False

    def feed(self, data: bytes) -> list[tuple[bool, bytes]]:
        """Return complete lines as (preceded_by_0xFF, line); raise LineTooLong."""
        out: list[tuple[bool, bytes]] = []
        start = 0
        n = len(data)
        while start < n:
            nl = data.find(b"\n", start)
            ff = data.find(SYNC, start, nl if nl >= 0 else n)
            if ff >= 0:
                self._buf.clear()
                self._after_sync = True
                start = ff + 1
                continue
            end = nl if nl >= 0 else n
            if len(self._buf) + end - start > self.max_line:
                self.reset()
                raise LineTooLong(
                    f"guest sent a line longer than {self.max_line} bytes",
                    details={"limit": self.max_line},
                )
            self._buf += data[start:end]
            if nl < 0:
                break
            line = bytes(self._buf).strip()
            if line:
                out.append((self._after_sync, line))
            self._buf.clear()
            self._after_sync = False
            start = nl + 1
        return out
