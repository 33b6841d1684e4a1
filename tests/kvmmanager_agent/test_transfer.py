"""Simple file calls and chunked transfer of 20 MB with sha256 and resume."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from tests.kvmmanager_agent.conftest import Raw

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


def test_chunk_errors(raw: Raw, roots: dict[str, Path]) -> None:
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
