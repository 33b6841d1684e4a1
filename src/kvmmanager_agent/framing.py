"""Byte stream -> lines, with the line-length limit, the 0xFF resync byte, and raw payloads.

A `file_write_chunk` line with `binary_length` N is followed by N raw bytes that belong
to it (0xFF and newlines inside are data): the framer hands both out together as one
`Binary` item. Only short lines are looked at for that (a payload-carrying request is
small); any other line is passed on untouched for the dispatcher to parse.
"""

from __future__ import annotations

import time

from . import jsonwire, protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, List, Optional, Union

    Item = Union[bytes, "Overlong", "Binary", "Abandoned"]


SYNC = 0xFF
_KEY = b'"binary_length"'


class Overlong:
    """Marker for a line that exceeded the limit (answered with -32600)."""


OVERLONG = Overlong()


class Binary:
    """A request line and the raw payload that followed it."""

    __slots__ = ("data", "line")

    def __init__(self, line: bytes, data: bytearray) -> None:
        self.line = line
        self.data = data


class Abandoned:
    """A request whose raw payload stalled: its line and how many bytes of it came.

    The bytes are dropped, never handed on, so a stalled upload writes nothing."""

    __slots__ = ("got", "line", "want")

    def __init__(self, line: bytes, got: int, want: int) -> None:
        self.line = line
        self.got = got
        self.want = want


def payload_length(line: bytes) -> Optional[int]:
    """N when `line` is a file_write_chunk request announcing N raw bytes, else None.

    A length beyond the limit is not honoured (the bytes would be taken as lines and the
    request refused by validation), so a hostile number cannot make the agent deaf."""
    if len(line) > protocol.MAX_BINARY_HEADER_BYTES or _KEY not in line:
        return None
    try:
        req = jsonwire.loads(line.decode("utf-8"))
    except Exception:  # any parse failure: the dispatcher answers the line itself
        return None
    if not isinstance(req, dict) or req.get("method") != "file_write_chunk":
        return None
    params = req.get("params")
    n = params.get("binary_length") if isinstance(params, dict) else None
    if type(n) is not int or not 0 < n <= protocol.MAX_BINARY_CHUNK_BYTES:
        return None
    return n


class LineFramer:
    def __init__(self, max_line: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_line = max_line
        self.clock = clock
        # While a payload is being collected: when it must be complete, and when the
        # next byte of it is due (protocol.PAYLOAD_*_SECONDS).
        self.deadline = 0.0
        self.due = 0.0
        self.buf = bytearray()
        self.discarding = False
        # Raw payload being collected: its line, the buffer, bytes still wanted.
        self.head = b""
        self.payload = bytearray()
        self.want = 0

    def reset(self) -> None:
        del self.buf[:]
        self.discarding = False
        self.head = b""
        self.payload = bytearray()
        self.want = 0

    def expire(self) -> List[Item]:
        """Abandon a stalled payload (see protocol.PAYLOAD_GAP_SECONDS): [Abandoned] or []."""
        if not self.want:
            return []
        now = self.clock()
        if now < self.due and now < self.deadline:
            return []
        item = Abandoned(self.head, len(self.payload) - self.want, len(self.payload))
        self.head, self.payload, self.want = b"", bytearray(), 0
        return [item]

    def feed(self, data: bytes) -> List[Item]:
        # Bytes after a stall are lines again (the host's 0xFF + sync), not payload.
        out: List[Item] = self.expire()
        pos, end = 0, len(data)
        view = memoryview(data)
        if self.want and data:
            self.due = self.clock() + protocol.PAYLOAD_GAP_SECONDS
        while pos < end:
            if self.want:
                take = min(self.want, end - pos)
                got = len(self.payload) - self.want
                self.payload[got : got + take] = view[pos : pos + take]
                self.want -= take
                pos += take
                if not self.want:
                    out.append(Binary(self.head, self.payload))
                    self.head, self.payload = b"", bytearray()
                continue
            ff = data.find(b"\xff", pos)
            stop = end if ff < 0 else ff
            pos = self._lines(data, pos, stop, out)
            if pos == stop and ff >= 0 and not self.want:
                # The host's 0xFF: whatever partial line we hold is stale.
                self.reset()
                pos = ff + 1
        return out

    def _lines(self, data: bytes, start: int, stop: int, out: List[Item]) -> int:
        """Take lines from data[start:stop]; return where it stopped (a payload starts)."""
        while True:
            nl = data.find(b"\n", start, stop)
            if nl < 0:
                if self.discarding:
                    return stop
                if len(self.buf) + (stop - start) > self.max_line:
                    del self.buf[:]
                    self.discarding = True
                else:
                    self.buf += data[start:stop]
                return stop
            if self.discarding or len(self.buf) + (nl - start) > self.max_line:
                self.discarding = False
                del self.buf[:]
                out.append(OVERLONG)
                start = nl + 1
                continue
            if self.buf:
                self.buf += data[start:nl]
                line = bytes(self.buf).rstrip(b"\r")
                del self.buf[:]
            else:
                line = data[start:nl].rstrip(b"\r")
            start = nl + 1
            if not line.strip():
                continue
            n = payload_length(line)
            if n is None:
                out.append(line)
                continue
            self.head, self.payload, self.want = line, bytearray(n), n
            now = self.clock()
            self.due = now + protocol.PAYLOAD_GAP_SECONDS
            self.deadline = now + protocol.PAYLOAD_TOTAL_SECONDS
            return start
