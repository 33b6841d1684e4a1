"""Fast checks of the guest builder's own parts (no VM, no apt): the initramfs writer and
the ELF reader the image's library check relies on."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest

from . import elf
from .cpio import CpioWriter


def test_cpio_newc_archive_reads_back_with_cpio(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin/tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (tree / "bin/tool").chmod(0o755)
    (tree / "bin/link").symlink_to("tool")
    buf = io.BytesIO()
    w = CpioWriter(buf)
    w.add_chardev("console", 5, 1)
    assert w.add_tree(tree) == 3
    w.close()
    data = buf.getvalue()
    assert len(data) % 4 == 0
    if shutil.which("cpio") is None:
        pytest.skip("no cpio to read the archive back")
    listing = subprocess.run(
        ["cpio", "-itv", "--quiet"], input=data, capture_output=True, check=True
    ).stdout.decode()
    lines = {
        line.split()[-1] if "->" not in line else line.split()[-3]: line
        for line in listing.splitlines()
    }
    assert lines["console"].startswith("crw-------")
    assert lines["bin"].startswith("drwx")
    assert lines["bin/tool"].startswith("-rwxr-xr-x")
    assert "bin/link -> tool" in listing
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        ["cpio", "-id", "--quiet", "--no-absolute-filenames", "bin/tool"],
        input=data,
        cwd=out,
        check=True,
    )
    assert (out / "bin/tool").read_bytes() == b"#!/bin/sh\necho hi\n"


def test_cpio_is_reproducible(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")

    def build() -> bytes:
        buf = io.BytesIO()
        w = CpioWriter(buf)
        w.add_tree(tmp_path)
        w.close()
        return buf.getvalue()

    assert build() == build()


def test_elf_needed_of_a_system_binary() -> None:
    assert "libc.so.6" in elf.needed(Path("/bin/ls"))
    assert elf.is_elf(Path("/bin/ls"))
    assert not elf.is_elf(Path(__file__))
