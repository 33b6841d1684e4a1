"""Simple file calls and chunked transfer of 20 MB with sha256 and resume."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest
from tests.kvmmanager_agent.conftest import Raw, RunningAgent

from kvmmanager_agent import protocol

CHUNK = 512 * 1024


def test_file_write_and_read_back(raw: Raw, roots: dict[str, Path]) -> None:
    path = str(roots["write"] / "a" / "b" / "f.bin")
    reply = raw.call(
        "file_write",
        {"path": path, "content": base64.b64encode(b"\x00\xffdata").decode(), "encoding": "base64",
         "create_dirs": True, "permissions": "0600"},
    )  # fmt: skip
    assert reply["result"] == {"bytes_written": 6, "path": path}
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    back = raw.call("file_read", {"path": path, "encoding": "base64"})["result"]
    assert base64.b64decode(back["content"]) == b"\x00\xffdata"
    # Binary content through utf8 is a clear error, not mojibake.
    assert raw.call("file_read", {"path": path})["error"]["data"]["field"] == "encoding"
    # Without create_dirs a missing parent is not found.
    reply = raw.call("file_write", {"path": str(roots["write"] / "x" / "y"), "content": ""})
    assert reply["error"]["code"] == -32002


def test_simple_calls_keep_the_size_cap(raw: Raw, roots: dict[str, Path]) -> None:
    big = roots["read"] / "big"
    with open(big, "wb") as fh:
        fh.truncate(10 * 1024 * 1024 + 1)
    reply = raw.call("file_read", {"path": str(big), "encoding": "base64"})
    assert reply["error"]["code"] == -32000


def upload(
    raw: Raw, path: str, data: bytes, resume: bool = False, stop_at: int | None = None
) -> dict:
    opened = raw.call("file_open", {"path": path, "mode": "w", "resume": resume})["result"]
    offset = opened["size_bytes"] if resume else 0
    end = len(data) if stop_at is None else stop_at
    while offset < end:
        piece = data[offset : min(offset + CHUNK, end)]
        r = raw.call(
            "file_write_chunk",
            {
                "handle": opened["handle"],
                "offset": offset,
                "data": base64.b64encode(piece).decode(),
            },
        )["result"]
        offset += r["written"]
    return raw.call("file_close", {"handle": opened["handle"]})["result"]


def test_chunked_transfer_20mb_with_sha256_and_resume(raw: Raw, roots: dict[str, Path]) -> None:
    data = os.urandom(20 * 1024 * 1024)
    digest = hashlib.sha256(data).hexdigest()
    path = str(roots["write"] / "big.bin")
    # The first attempt "loses the connection" after 7 MB; the second resumes.
    partial = upload(raw, path, data, stop_at=7 * 1024 * 1024)
    assert partial["size_bytes"] == 7 * 1024 * 1024
    done = upload(raw, path, data, resume=True)
    assert done == {"size_bytes": len(data), "sha256": digest}

    opened = raw.call("file_open", {"path": path})["result"]
    got = bytearray()
    while True:
        r = raw.call(
            "file_read_chunk", {"handle": opened["handle"], "offset": len(got), "length": CHUNK}
        )["result"]
        got += base64.b64decode(r["data"])
        if r["eof"]:
            break
    assert hashlib.sha256(got).hexdigest() == digest
    assert raw.call("file_close", {"handle": opened["handle"]})["result"]["sha256"] == digest
    stat = raw.call("file_stat", {"path": path, "sha256": True})["result"]
    assert stat["sha256"] == digest and stat["type"] == "file"


def test_chunk_errors(raw: Raw, roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "WRITE_ORDER_WAIT_SECONDS", 0.2)
    h = raw.call("file_open", {"path": str(roots["write"] / "c"), "mode": "w"})["result"]["handle"]
    reply = raw.call("file_write_chunk", {"handle": h, "offset": 10, "data": "AAAA"})
    assert reply["error"]["data"]["field"] == "offset"  # no holes
    reply = raw.call("file_write_chunk", {"handle": h, "offset": 0, "data": "@@@"})
    assert reply["error"]["data"]["field"] == "data"
    raw.call("file_close", {"handle": h})
    assert raw.call("file_close", {"handle": h})["error"]["code"] == -32002
    (roots["read"] / "r").write_text("r")
    h = raw.call("file_open", {"path": str(roots["read"] / "r")})["result"]["handle"]
    reply = raw.call("file_write_chunk", {"handle": h, "offset": 0, "data": "AAAA"})
    assert reply["error"]["data"]["field"] == "handle"
    reply = raw.call("file_read_chunk", {"handle": h, "offset": 0, "length": CHUNK + 1})
    assert reply["error"]["code"] == -32602


def test_handle_limit(raw: Raw, roots: dict[str, Path]) -> None:
    (roots["read"] / "r").write_text("r")
    codes = [
        raw.call("file_open", {"path": str(roots["read"] / "r")}).get("error", {}).get("code")
        for _ in range(17)
    ]
    assert codes[:16] == [None] * 16 and codes[16] == -32004


def _write(raw: Raw, handle: int, offset: int, data: bytes) -> None:
    r = raw.call(
        "file_write_chunk",
        {"handle": handle, "offset": offset, "data": base64.b64encode(data).decode()},
    )
    assert r["result"]["written"] == len(data), r


def test_an_unfinished_write_never_replaces_the_file(raw: Raw, roots: dict[str, Path]) -> None:
    """Until file_close, the bytes are in `.NAME.kvmm-part`; the old file stays whole. An
    aborted close keeps the part aside; a resume continues from it; the final close puts
    it in place with the replaced file's mode."""
    target = roots["write"] / "conf.txt"
    target.write_bytes(b"old and whole\n")
    target.chmod(0o600)
    part = roots["write"] / ".conf.txt.kvmm-part"
    h = raw.call("file_open", {"path": str(target), "mode": "w"})["result"]["handle"]
    _write(raw, h, 0, b"new, half")
    assert target.read_bytes() == b"old and whole\n"  # what a kill -9 now would leave
    assert part.read_bytes() == b"new, half"
    assert raw.call("file_close", {"handle": h, "abort": True})["result"]["size_bytes"] == 9
    assert target.read_bytes() == b"old and whole\n"
    opened = raw.call("file_open", {"path": str(target), "mode": "w", "resume": True})["result"]
    assert opened["size_bytes"] == 9
    _write(raw, opened["handle"], 9, b" and done\n")
    closed = raw.call("file_close", {"handle": opened["handle"]})["result"]
    assert closed["sha256"] == hashlib.sha256(b"new, half and done\n").hexdigest()
    assert target.read_bytes() == b"new, half and done\n"
    assert not part.exists()
    assert target.stat().st_mode & 0o777 == 0o600


def test_a_write_onto_a_directory_or_symlink_is_refused(raw: Raw, roots: dict[str, Path]) -> None:
    (roots["write"] / "d").mkdir()
    (roots["write"] / "l").symlink_to(roots["read"])
    for name in ("d", "l"):
        r = raw.call("file_open", {"path": str(roots["write"] / name), "mode": "w"})
        assert r["error"]["data"]["field"] == "path", r
    assert sorted(p.name for p in roots["write"].iterdir()) == ["d", "l"]


def _binary(raw: Raw, handle: int, offset: int, data: bytes, req_id: int = 1) -> None:
    """Send one raw-payload write (line + bytes), without waiting for its reply."""
    msg = {"jsonrpc": "2.0", "id": req_id, "method": "file_write_chunk",
           "params": {"handle": handle, "offset": offset, "binary_length": len(data)}}  # fmt: skip
    raw.send(json.dumps(msg).encode() + b"\n" + data)


def _replies(raw: Raw, n: int) -> dict:
    out = {}
    for _ in range(n):
        r = raw.reply()
        out[r["id"]] = r
    return out


def test_binary_chunks_pipelined_out_of_order(raw: Raw, roots: dict[str, Path]) -> None:
    """Raw payloads (0xFF and newlines are data) in flight together; one that arrives
    before its predecessor waits for it; the stream stays in step afterwards."""
    path = roots["write"] / "bin.dat"
    opened = raw.call("file_open", {"path": str(path), "mode": "w"})["result"]
    assert opened["max_binary_chunk_bytes"] == protocol.MAX_BINARY_CHUNK_BYTES
    assert 1 <= opened["max_chunks_in_flight"] <= protocol.MAX_CHUNKS_IN_FLIGHT
    h = opened["handle"]
    a = b"\xff\n" * 1000 + os.urandom(3 * 1024 * 1024)
    b = b'\n{"jsonrpc":"2.0","id":9,"method":"ping"}\n\xff' + os.urandom(777)
    # The second chunk goes first: the agent holds it until the first one landed.
    _binary(raw, h, len(a), b, req_id=2)
    _binary(raw, h, 0, a, req_id=1)
    got = _replies(raw, 2)
    assert got[1]["result"] == {"written": len(a), "size_bytes": len(a)}
    assert got[2]["result"] == {"written": len(b), "size_bytes": len(a) + len(b)}
    assert raw.call("ping", req_id=3)["result"]["pong"] is True
    closed = raw.call("file_close", {"handle": h})["result"]
    assert closed["sha256"] == hashlib.sha256(a + b).hexdigest()
    assert path.read_bytes() == a + b


def test_duplicate_and_missing_chunks_are_refused(
    raw: Raw, roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "WRITE_ORDER_WAIT_SECONDS", 0.2)
    path = roots["write"] / "strict.dat"
    h = raw.call("file_open", {"path": str(path), "mode": "w"})["result"]["handle"]
    _binary(raw, h, 0, b"first")
    assert raw.reply()["result"]["size_bytes"] == 5
    _binary(raw, h, 0, b"first")  # a duplicate
    err = raw.reply()["error"]
    assert err["data"]["field"] == "offset" and "already written" in err["message"]
    assert "continue at 5" in err["message"]
    _binary(raw, h, 9, b"late")  # its predecessor never comes
    err = raw.reply()["error"]
    assert err["data"]["field"] == "offset" and "missing" in err["message"]
    # Both kinds of chunk at once, or neither, is a clear error.
    both = {"jsonrpc": "2.0", "id": 1, "method": "file_write_chunk",
            "params": {"handle": h, "offset": 5, "data": "AAAA", "binary_length": 3}}  # fmt: skip
    raw.send(json.dumps(both).encode() + b"\nabc")  # the line announced 3 raw bytes
    assert raw.reply()["error"]["data"]["field"] == "data"
    neither = {"handle": h, "offset": 5}
    assert raw.call("file_write_chunk", neither)["error"]["data"]["field"] == "data"
    # binary_length inside a batch has no payload to go with it.
    batch = [{"jsonrpc": "2.0", "id": 7, "method": "file_write_chunk",
              "params": {"handle": h, "offset": 5, "binary_length": 3}}]  # fmt: skip
    raw.send(json.dumps(batch).encode() + b"\n")
    err = json.loads(raw.line())[0]["error"]
    assert err["data"]["field"] == "binary_length" and "batch" in err["message"]
    # A length past the limit is not honoured: refused, and the agent keeps its framing.
    too_big = {"handle": h, "offset": 5, "binary_length": protocol.MAX_BINARY_CHUNK_BYTES + 1}
    assert raw.call("file_write_chunk", too_big)["error"]["data"]["field"] == "binary_length"
    assert raw.call("file_close", {"handle": h})["result"]["size_bytes"] == 5
    assert path.read_bytes() == b"first"


def test_close_releases_a_write_waiting_for_its_turn(
    agent: RunningAgent, raw: Raw, roots: dict[str, Path]
) -> None:
    h = raw.call("file_open", {"path": str(roots["write"] / "w"), "mode": "w"})["result"]["handle"]
    _binary(raw, h, 100, b"x" * 10, req_id=1)  # waits (up to 10 s) for bytes 0-99
    handle = agent.ctx.transfers.get(h)
    with handle.turn:  # the write is waiting on a worker; the close wakes it
        assert handle.turn.wait_for(lambda: handle.waiting == 1, 30), "it never waited"
    raw.request("file_close", {"handle": h, "abort": True}, req_id=2)
    got = _replies(raw, 2)
    assert got[2]["result"]["size_bytes"] == 0
    assert got[1]["error"]["code"] == protocol.NOT_FOUND
    assert "closed" in got[1]["error"]["message"]


def test_binary_reads_send_the_bytes_raw_after_the_reply(raw: Raw, roots: dict[str, Path]) -> None:
    # Bytes that would break a line protocol if they were not counted: 0xFF and newlines.
    data = (b"\xff\n" + os.urandom(1000)) * 2000
    (roots["read"] / "bin").write_bytes(data)
    opened = raw.call("file_open", {"path": str(roots["read"] / "bin"), "mode": "r"})["result"]
    assert opened["max_binary_chunk_bytes"] == protocol.MAX_BINARY_CHUNK_BYTES
    h = opened["handle"]
    got = b""
    while True:
        params = {"handle": h, "offset": len(got), "length": 1 << 20, "binary": True}
        reply = raw.call("file_read_chunk", params)["result"]
        assert "data" not in reply
        n = reply["binary_length"]
        while len(raw.buf) < n:
            raw.buf += raw.sock.recv(1 << 20)
        got, raw.buf = got + raw.buf[:n], raw.buf[n:]
        if reply["eof"]:
            break
    assert got == data
    # Then the next reply is a plain line again, and base64 reads keep their limit.
    big = raw.call("file_read_chunk", {"handle": h, "offset": 0, "length": 1 << 20})
    assert big["error"]["code"] == -32602 and big["error"]["data"]["field"] == "length"
    # In a batch the bytes travel as base64 (one line answers the whole batch).
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "file_read_chunk",
         "params": {"handle": h, "offset": 0, "length": 10, "binary": True}},
    ]  # fmt: skip
    raw.send(json.dumps(batch).encode() + b"\n")
    (item,) = raw.reply()
    assert base64.b64decode(item["result"]["data"]) == data[:10]
    assert "binary_length" not in item["result"]
    assert (
        raw.call("file_close", {"handle": h})["result"]["sha256"]
        == hashlib.sha256(data).hexdigest()
    )
