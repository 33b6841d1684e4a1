"""Byte stream -> lines, with the line-length limit and the 0xFF resync byte."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Union

    Item = Union[bytes, "Overlong"]


SYNC = 0xFF


class Overlong:
    """Marker for a line that exceeded the limit (answered with -32600)."""


OVERLONG = Overlong()


class LineFramer:
    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.buf = bytearray()
        self.discarding = False

    def reset(self) -> None:
        del self.buf[:]
        self.discarding = False

    def feed(self, data: bytes) -> List[Item]:
        out: List[Item] = []
        segments = data.split(b"\xff")
        for i, seg in enumerate(segments):
            if i:
                # The host's 0xFF: whatever partial line we hold is stale.
                self.reset()
            self._feed(seg, out)
        return out

    def _feed(self, seg: bytes, out: List[Item]) -> None:
        start = 0
        while True:
            nl = seg.find(b"\n", start)
            if nl < 0:
                rest = seg[start:]
                if self.discarding:
                    return
                if len(self.buf) + len(rest) > self.max_line:
                    del self.buf[:]
                    self.discarding = True
                else:
                    self.buf += rest
                return
            piece = seg[start:nl]
            if self.discarding or len(self.buf) + len(piece) > self.max_line:
                self.discarding = False
                del self.buf[:]
                out.append(OVERLONG)
            else:
                self.buf += piece
                line = bytes(self.buf).rstrip(b"\r")
                del self.buf[:]
                if line.strip():
                    out.append(line)
            start = nl + 1
