from __future__ import annotations

from kvmmanager_agent.framing import OVERLONG, LineFramer


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
