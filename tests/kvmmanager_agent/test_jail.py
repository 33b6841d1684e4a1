"""Path jail: `..`, symlink escapes, writing through symlinks, paths outside the roots."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.kvmmanager_agent.conftest import Raw, RunningAgent


def code(reply: dict) -> int | None:
    return reply.get("error", {}).get("code")


def test_reads_inside_the_root(raw: Raw, roots: dict[str, Path]) -> None:
    (roots["read"] / "sub").mkdir()
    (roots["read"] / "sub" / "f.txt").write_text("hello")
    reply = raw.call("file_read", {"path": str(roots["read"] / "sub" / "f.txt")})
    assert reply["result"] == {"content": "hello", "size_bytes": 5, "encoding": "utf8"}


def test_dotdot_is_refused(raw: Raw, roots: dict[str, Path]) -> None:
    (roots["outside"] / "secret").write_text("s")
    path = f"{roots['read']}/../secret"
    reply = raw.call("file_read", {"path": path})
    assert code(reply) == -32001 and reply["error"]["data"]["field"] == "path"


def test_absolute_path_outside_and_relative_path(raw: Raw, roots: dict[str, Path]) -> None:
    assert code(raw.call("file_read", {"path": "/etc/passwd"})) == -32001
    # A sibling directory sharing the root's prefix is outside too.
    sibling = Path(str(roots["read"]) + "x")
    sibling.mkdir()
    (sibling / "f").write_text("x")
    assert code(raw.call("file_read", {"path": str(sibling / "f")})) == -32001
    assert code(raw.call("file_read", {"path": "relative/file"})) == -32602
    # Writing is allowed only under the write roots, not the read roots.
    reply = raw.call("file_write", {"path": str(roots["read"] / "new"), "content": "x"})
    assert code(reply) == -32001


def test_symlinked_directory_escape_is_refused(raw: Raw, roots: dict[str, Path]) -> None:
    (roots["outside"] / "secret").write_text("s")
    os.symlink(roots["outside"], roots["read"] / "link")
    assert code(raw.call("file_read", {"path": str(roots["read"] / "link" / "secret")})) == -32001
    os.symlink(roots["outside"], roots["write"] / "dlink")
    reply = raw.call(
        "file_write", {"path": str(roots["write"] / "dlink" / "planted"), "content": "x"}
    )
    assert code(reply) == -32001
    assert not (roots["outside"] / "planted").exists()


def test_final_symlink_is_never_followed(raw: Raw, roots: dict[str, Path]) -> None:
    target = roots["outside"] / "victim"
    target.write_text("original")
    os.symlink(target, roots["write"] / "through")
    reply = raw.call("file_write", {"path": str(roots["write"] / "through"), "content": "pwned"})
    assert code(reply) == -32001
    assert target.read_text() == "original"
    assert code(raw.call("file_read", {"path": str(roots["write"] / "through")})) == -32001
    # Even a symlink pointing inside the root is refused: no symlinks at all below a root.
    inside = roots["write"] / "real"
    inside.write_text("ok")
    os.symlink(inside, roots["write"] / "inner")
    assert code(raw.call("file_read", {"path": str(roots["write"] / "inner")})) == -32001


def test_fifo_and_directory_are_not_files(raw: Raw, roots: dict[str, Path]) -> None:
    os.mkfifo(roots["read"] / "fifo")
    assert code(raw.call("file_read", {"path": str(roots["read"] / "fifo")})) == -32001
    assert code(raw.call("file_read", {"path": str(roots["read"])})) == -32001


def test_missing_file_is_not_found(raw: Raw, roots: dict[str, Path]) -> None:
    assert code(raw.call("file_read", {"path": str(roots["read"] / "nope")})) == -32002


def test_an_allowed_entry_may_name_one_file(
    start_agent: Callable[..., RunningAgent], roots: dict[str, Path]
) -> None:
    real = roots["outside"] / "usr-lib-os-release"
    real.write_text("ID=test\n")
    listed = roots["outside"] / "os-release"  # the admin listed a symlink, as on Debian
    os.symlink(real, listed)
    (roots["outside"] / "sibling").write_text("no")
    running = start_agent(security={"allowed_read_paths": [str(listed)]})
    raw = Raw(running.path)
    assert raw.call("file_read", {"path": str(listed)})["result"]["content"] == "ID=test\n"
    assert code(raw.call("file_read", {"path": str(roots["outside"] / "sibling")})) == -32001
    assert code(raw.call("file_read", {"path": str(listed) + "x"})) == -32001
    raw.close()
