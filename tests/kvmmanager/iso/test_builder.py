"""The agent ISO read back with pycdlib: content, checksums, names, modes, reproducibility."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pycdlib
import pytest

from kvmmanager.iso import ISO_NAME, VOLUME_LABEL, agent_version
from kvmmanager.iso.builder import IsoBuild, build_iso

EPOCH = 1700000000
EXPECTED = {
    "kvmmanager-agent.pyz": 0o644,
    "install.sh": 0o755,
    "uninstall.sh": 0o755,
    "config.json": 0o644,
    "INSTALL.txt": 0o644,
    "VERSION": 0o644,
    "SHA256SUMS": 0o644,
    "packages/kvmmanager-agent.deb": 0o644,
    "packages/kvmmanager-agent.rpm": 0o644,
    "packages/kvmmanager-agent.apk": 0o644,
    "service/kvmmanager-agent.service": 0o644,
    "service/kvmmanager-agent.openrc": 0o755,
    "service/kvmmanager-agent.sysv": 0o755,
    "service/60-kvmmanager-agent.rules": 0o644,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> IsoBuild:
    base = tmp_path_factory.mktemp("kvmm-t-iso-build")
    return build_iso(base, source_date_epoch=EPOCH, cache_dir=base / "cache")


def _read(iso: pycdlib.PyCdlib, **path: str) -> bytes:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, **path)
    return out.getvalue()


def _walk_rr(iso: pycdlib.PyCdlib) -> dict[str, int]:
    """Every file on the ISO by Rock Ridge path -> Rock Ridge mode."""
    found = {}
    for dirname, _dirs, files in iso.walk(rr_path="/"):
        for name in files:
            path = f"{dirname.rstrip('/')}/{name}"
            rec = iso.get_record(rr_path=path)
            found[path.lstrip("/")] = rec.rock_ridge.get_file_mode()
    return found


def test_iso_has_every_file_with_rock_ridge_names_and_modes(built: IsoBuild) -> None:
    assert built.path.name == ISO_NAME
    iso = pycdlib.PyCdlib()
    iso.open(str(built.path))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == VOLUME_LABEL
        assert iso.has_rock_ridge()
        assert iso.has_joliet()
        modes = _walk_rr(iso)
        assert set(modes) == set(EXPECTED)
        for rel, mode in EXPECTED.items():
            assert modes[rel] == 0o100000 | mode, rel
        # Joliet carries the same long names for Windows readers.
        assert _read(iso, joliet_path="/install.sh") == _read(iso, rr_path="/install.sh")
        assert _read(iso, rr_path="/VERSION").decode().strip() == agent_version()
    finally:
        iso.close()


def test_sha256sums_cover_every_other_file_and_match(built: IsoBuild) -> None:
    iso = pycdlib.PyCdlib()
    iso.open(str(built.path))
    try:
        lines = _read(iso, rr_path="/SHA256SUMS").decode().splitlines()
        sums = dict(reversed(line.split("  ", 1)) for line in lines)
        assert set(sums) == set(EXPECTED) - {"SHA256SUMS"}
        for rel, digest in sums.items():
            assert hashlib.sha256(_read(iso, rr_path="/" + rel)).hexdigest() == digest, rel
    finally:
        iso.close()
    assert built.sha256 == hashlib.sha256(built.path.read_bytes()).hexdigest()


def test_packages_on_the_iso_are_real_packages(built: IsoBuild) -> None:
    iso = pycdlib.PyCdlib()
    iso.open(str(built.path))
    try:
        deb = _read(iso, rr_path="/packages/kvmmanager-agent.deb")
        rpm = _read(iso, rr_path="/packages/kvmmanager-agent.rpm")
        apk = _read(iso, rr_path="/packages/kvmmanager-agent.apk")
    finally:
        iso.close()
    assert deb.startswith(b"!<arch>\ndebian-binary")
    assert rpm[:4] == b"\xed\xab\xee\xdb"  # rpm lead magic
    assert apk[:2] == b"\x1f\x8b"  # apk v2: concatenated gzip streams


def test_build_is_byte_reproducible(tmp_path: Path, built: IsoBuild) -> None:
    # A cold package cache too: nfpm's output must be reproducible, not only cached.
    again = build_iso(tmp_path / "again.iso", source_date_epoch=EPOCH, cache_dir=tmp_path / "c")
    assert again.sha256 == built.sha256
    assert again.path.read_bytes() == built.path.read_bytes()


def test_another_epoch_changes_the_bytes(tmp_path: Path, built: IsoBuild) -> None:
    other = build_iso(tmp_path / "o.iso", source_date_epoch=EPOCH + 86400, cache_dir=tmp_path)
    assert other.sha256 != built.sha256
    assert other.files["kvmmanager-agent.pyz"] == built.files["kvmmanager-agent.pyz"]


def test_output_into_a_directory_uses_the_iso_name(tmp_path: Path) -> None:
    result = build_iso(tmp_path, source_date_epoch=EPOCH, cache_dir=tmp_path / "cache")
    assert result.path == tmp_path / ISO_NAME
    assert not list(tmp_path.glob("*.tmp"))
