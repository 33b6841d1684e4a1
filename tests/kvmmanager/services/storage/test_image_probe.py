"""image_probe's pure rules on real qcow2 headers made by qemu-img (the libvirt side is
exercised by tests/security/test_image_backing.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kvmmanager.services.storage.image_probe import (
    HEAD_BYTES,
    ImageProbe,
    Qcow2Refs,
    qcow2_refs,
    upload_refusal,
)


def _head(tmp_path: Path, *opts: str, size: str = "1M") -> bytes:
    image = tmp_path / "i.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *opts, str(image), size], check=True)
    return image.read_bytes()[:HEAD_BYTES]


def test_flat_images_name_nothing(tmp_path: Path) -> None:
    assert qcow2_refs(_head(tmp_path)) == Qcow2Refs()
    assert qcow2_refs(_head(tmp_path, "-o", "compat=0.10")) == Qcow2Refs()


def test_backing_and_data_files_are_read_from_the_header(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(b"\0" * 4096)
    refs = qcow2_refs(_head(tmp_path, "-F", "raw", "-b", str(base)))
    assert refs.backing_file == str(base) and not refs.external_data
    data = tmp_path / "data.raw"
    refs = qcow2_refs(_head(tmp_path, "-o", f"data_file={data}", size="4096"))
    assert refs.external_data and refs.data_file == str(data)


def test_a_truncated_header_is_unreadable_not_flat(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(b"\0")
    head = _head(tmp_path, "-F", "raw", "-b", str(base))
    assert qcow2_refs(head[:200]).unreadable
    assert qcow2_refs(b"not an image").unreadable


FLAT_QCOW2 = ImageProbe(format="qcow2", backing=None, qcow2_header=True, refs=Qcow2Refs())
PLAIN = ImageProbe(format="raw", backing=None, qcow2_header=False, refs=Qcow2Refs())
ISO = ImageProbe(format="iso", backing=None, qcow2_header=False, refs=Qcow2Refs())


@pytest.mark.parametrize(
    ("probe", "declared", "refused"),
    [
        (FLAT_QCOW2, "qcow2", None),
        (PLAIN, "raw", None),
        (ISO, "iso", None),
        (ISO, "raw", None),  # both plain bytes to QEMU
        (PLAIN, "iso", None),
        (FLAT_QCOW2, "raw", "format=qcow2"),
        (PLAIN, "qcow2", "not a qcow2"),
        (ImageProbe("vmdk", None, False, Qcow2Refs()), "raw", "vmdk"),
        # libvirt missed it (a pool that does not probe): the header still tells
        (ImageProbe("raw", None, True, Qcow2Refs(backing_file="/etc/shadow")), "raw", "shadow"),
        (ImageProbe("qcow2", "/etc/shadow", True, Qcow2Refs()), "qcow2", "backing file"),
        (ImageProbe("qcow2", None, True, Qcow2Refs(external_data=True)), "qcow2", "another"),
        (ImageProbe("qcow2", None, True, Qcow2Refs(unreadable="short")), "qcow2", "checked"),
    ],
)
def test_upload_refusal(probe: ImageProbe, declared: str, refused: str | None) -> None:
    why = upload_refusal(probe, declared)
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why
