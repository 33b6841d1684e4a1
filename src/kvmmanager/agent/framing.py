"""Reply stream -> lines, bounded, with the agent's 0xFF sync marker.

The agent writes 0xFF only immediately before a `sync` reply, at a line boundary, so a
0xFF both ends whatever partial (stale) line we hold and marks the next line as a sync
candidate. 0xFF never occurs inside UTF-8 JSON (but may inside a reply's raw bytes,
which are counted, never scanned).
"""

from __future__ import annotations

import json

from kvmmanager.core.errors import GuestError
from kvmmanager_agent import protocol

SYNC = b"\xff"


class LineTooLong(GuestError):
    """The guest sent a line beyond the reply cap: it is flooding or broken."""


# A reply whose result announces `binary_length` N (file_read_chunk with `binary`) is
# followed by exactly N raw bytes (0xFF and newlines included): they belong to it.
_BINARY_KEY = b'"binary_length"'
# Such a reply line is short; a longer one is never taken to announce a payload.
_BINARY_HEADER_MAX = 4096


def payload_length(line: bytes, limit: int) -> int | None:
    """N when `line` is a reply announcing N raw bytes (0 < N <= limit), else None."""
    if len(line) > _BINARY_HEADER_MAX or _BINARY_KEY not in line:
        return None
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError):
        return None
    result = msg.get("result") if isinstance(msg, dict) else None
    n = result.get("binary_length") if isinstance(result, dict) else None
    if type(n) is not int or not 0 < n <= limit:
        return None
    return n


class ReplyFramer:
    def __init__(self, max_line: int, max_payload: int = protocol.MAX_BINARY_CHUNK_BYTES) -> None:
        self.max_line = max_line
        self.max_payload = max_payload
        self._buf = bytearray()
        self._after_sync = False  # the line being assembled followed a 0xFF
        # A reply whose raw bytes are being collected: its line, the bytes, still wanted.
        self._head: tuple[bool, bytes] | None = None
        self._payload = bytearray()
        self._want = 0

    def reset(self) -> None:
        self._buf.clear()
        self._after_sync = False
        self._head = None
        self._payload = bytearray()
        self._want = 0

    def feed(self, data: bytes) -> list[tuple[bool, bytes, bytes | None]]:
        """Complete replies as (preceded_by_0xFF, line, raw bytes or None); raise
        LineTooLong."""
        out: list[tuple[bool, bytes, bytes | None]] = []
        start = 0
        n = len(data)
        while start < n:
            if self._want:
                take = min(self._want, n - start)
                self._payload += data[start : start + take]
                self._want -= take
                start += take
                if not self._want and self._head is not None:
                    out.append((*self._head, bytes(self._payload)))
                    self._head, self._payload = None, bytearray()
                continue
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
            after_sync = self._after_sync
            self._buf.clear()
            self._after_sync = False
            start = nl + 1
            if not line:
                continue
            want = payload_length(line, self.max_payload)
            if want is None:
                out.append((after_sync, line, None))
            else:
                self._head, self._want = (after_sync, line), want
        return out
