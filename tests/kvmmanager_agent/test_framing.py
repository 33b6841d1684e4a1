from __future__ import annotations

import json

from kvmmanager_agent import protocol
from kvmmanager_agent.framing import OVERLONG, Binary, LineFramer


def test_lines_split_across_chunks() -> None:
    f = LineFramer(100)
    assert f.feed(b'{"a"') == []
    assert f.feed(b":1}\n{") == [b'{"a":1}']
    assert f.feed(b"}\r\n\n") == [b"{}"]


def test_overlong_line_is_discarded_to_the_next_newline() -> None:
    f = LineFramer(10)
    assert f.feed(b"x" * 8) == []
    assert f.feed(b"x" * 8) == []
    assert f.feed(b"yyyy" * 100) == []
    assert f.feed(b"zz\nok\n") == [OVERLONG, b"ok"]
    assert f.feed(b"y" * 11 + b"\n") == [OVERLONG]


def test_ff_drops_the_partial_line() -> None:
    f = LineFramer(100)
    assert f.feed(b'{"half') == []
    assert f.feed(b'\xff{"new":1}\n') == [b'{"new":1}']
    # Complete lines before the 0xFF are kept.
    assert f.feed(b"a\nb\xffc\n") == [b"a", b"c"]
    f2 = LineFramer(4)
    f2.feed(b"xxxxxxx")
    assert f2.feed(b"\xffok\n") == [b"ok"]


def _head(n: object, method: str = "file_write_chunk") -> bytes:
    params = {"handle": 1, "offset": 0, "binary_length": n}
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()


def test_a_raw_payload_follows_its_line_whatever_its_bytes() -> None:
    payload = b"\xff\n\xff{}\n" + bytes(range(256))
    stream = _head(len(payload)) + b"\n" + payload + b'{"next":1}\n'
    for step in (1, 7, len(stream)):  # however the reads cut it
        f = LineFramer(10_000)
        out = []
        for i in range(0, len(stream), step):
            out += f.feed(stream[i : i + step])
        assert len(out) == 2 and isinstance(out[0], Binary), out
        assert out[0].line == _head(len(payload)) and bytes(out[0].data) == payload
        assert out[1] == b'{"next":1}'


def test_only_a_sane_file_write_chunk_announces_a_payload() -> None:
    f = LineFramer(10_000)
    for line in (
        _head(protocol.MAX_BINARY_CHUNK_BYTES + 1),  # beyond the limit: never honoured
        _head(0),
        _head(True),
        _head("3"),
        _head(3, method="file_write"),
    ):
        assert f.feed(line + b"\nabc\n") == [line, b"abc"]
    # A host that goes away mid-payload: the reset drops it, like a partial line.
    assert f.feed(_head(10) + b"\nabc") == []
    f.reset()  # what the agent does when the host goes away
    assert f.feed(b"ok\n") == [b"ok"]
