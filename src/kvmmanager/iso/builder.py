"""Build kvmmanager-guest-agent.iso in Python (pycdlib): no genisoimage/xorriso needed.

The ISO is byte-reproducible: every timestamp comes from SOURCE_DATE_EPOCH (pycdlib
reads the clock itself, so its `time` module references are pointed at a fixed clock
while the image is mastered), files are added in sorted order with fixed modes, and
the packages are reproducible too (nfpm honours SOURCE_DATE_EPOCH).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from time import struct_time  # in the class below, `time` is its method
from typing import Any

import pycdlib

from kvmmanager.iso import ISO_NAME, VOLUME_LABEL, agent_version
from kvmmanager.iso.packages import PackagingDirs, build_agent_packages, packaging_dirs
from kvmmanager.iso.zipapp import build_agent_zipapp

# Top-level files, ISO path -> (packaging/agent file, mode). The zipapp, VERSION,
# SHA256SUMS and the packages are produced by the build.
_STATIC = {
    "install.sh": ("install.sh", 0o755),
    "uninstall.sh": ("uninstall.sh", 0o755),
    "config.json": ("config.json", 0o644),
    "INSTALL.txt": ("INSTALL.txt", 0o644),
    "service/kvmmanager-agent.service": ("kvmmanager-agent.service", 0o644),
    "service/kvmmanager-agent.openrc": ("kvmmanager-agent.openrc", 0o755),
    "service/kvmmanager-agent.sysv": ("kvmmanager-agent.sysv", 0o755),
    "service/60-kvmmanager-agent.rules": ("60-kvmmanager-agent.rules", 0o644),
}
# On the CD the packages carry no version (VERSION says it): install.sh finds them by kind.
_PKG_NAMES = {kind: f"kvmmanager-agent.{kind}" for kind in ("deb", "rpm", "apk")}

_pycdlib_clock_lock = threading.Lock()


@dataclass(slots=True)
class IsoBuild:
    path: Path
    version: str
    sha256: str
    size: int
    epoch: int
    files: dict[str, str] = field(default_factory=dict)  # ISO path -> sha256


class _FixedClock:
    """Stands in for the `time` module inside pycdlib: always SOURCE_DATE_EPOCH, in UTC."""

    def __init__(self, epoch: int) -> None:
        self._epoch = float(epoch)

    def time(self) -> float:
        return self._epoch

    def localtime(self, secs: float | None = None) -> struct_time:
        return time.gmtime(self._epoch if secs is None else secs)

    def gmtime(self, secs: float | None = None) -> struct_time:
        return time.gmtime(self._epoch if secs is None else secs)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@contextmanager
def _fixed_clock(epoch: int) -> Iterator[None]:
    from pycdlib import dates, headervd, utils
    from pycdlib import pycdlib as core

    modules = (core, headervd, dates, utils)
    with _pycdlib_clock_lock:
        saved = [m.time for m in modules]
        clock = _FixedClock(epoch)
        for m in modules:
            # pycdlib's modules bind `time`; a fixed clock there makes the ISO reproducible.
            m.time = clock  # type: ignore[attr-defined]
        try:
            yield
        finally:
            for m, t in zip(modules, saved, strict=True):
                m.time = t  # type: ignore[attr-defined]  # the module's own `time` back


def _iso9660_name(name: str, is_dir: bool) -> str:
    # ISO 9660 level 3 names: d-characters only, 30 characters, one dot; readers use the
    # Rock Ridge or Joliet name anyway, this is the fallback for bare ISO 9660.
    stem, dot, ext = name.rpartition(".") if "." in name and not is_dir else (name, "", "")
    stem = re.sub(r"[^A-Z0-9_]", "_", stem.upper())
    ext = re.sub(r"[^A-Z0-9_]", "_", ext.upper())[:3]
    if is_dir:
        return stem[:31]
    stem = stem[: 30 - len(ext) - 1]
    return f"{stem}.{ext};1" if dot else f"{stem}.;1"


def _iso_dir_path(rel: str) -> str:
    return "/" + "/".join(_iso9660_name(p, is_dir=True) for p in rel.split("/"))


def _iso_path(rel: str) -> str:
    head, _, name = rel.rpartition("/")
    prefix = _iso_dir_path(head) if head else ""
    return f"{prefix}/{_iso9660_name(name, is_dir=False)}"


def default_epoch(dirs: PackagingDirs) -> int:
    """The one rule for the agent artifacts' timestamps, shared by `agent-iso build`,
    deploy's build and `scripts/release` (they gave one agent version two ISO hashes):
    SOURCE_DATE_EPOCH; else, in a git checkout, the time of the last commit that changed
    the agent's inputs (the same in every clone); else the newest mtime of the inputs
    (an installed package, whose files git does not know)."""
    if env := os.environ.get("SOURCE_DATE_EPOCH"):
        return int(env)
    import kvmmanager_agent

    roots = (dirs.agent, Path(kvmmanager_agent.__file__).parent)
    if (committed := _last_commit_time(roots)) is not None:
        return committed
    newest = 0.0
    for root in roots:
        for p in root.rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts:
                newest = max(newest, p.stat().st_mtime)
    return int(newest)


def _last_commit_time(roots: tuple[Path, ...]) -> int | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        out = subprocess.run(
            [git, "-C", str(roots[0]), "log", "-1", "--format=%ct", "--", *map(str, roots)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip()
    return int(text) if out.returncode == 0 and text.isdigit() else None


def master_iso(files: dict[str, tuple[bytes, int]], out_path: Path, epoch: int) -> None:
    """Write an ISO (Rock Ridge 1.09 + Joliet) holding `files` (path -> (bytes, mode))."""
    iso = pycdlib.PyCdlib()
    with _fixed_clock(epoch):
        iso.new(
            interchange_level=3,
            vol_ident=VOLUME_LABEL,
            sys_ident="LINUX",
            app_ident_str="KVM MANAGER",
            joliet=3,
            rock_ridge="1.09",
        )
        dirs = sorted({rel.rsplit("/", 1)[0] for rel in files if "/" in rel})
        for d in dirs:
            iso.add_directory(
                _iso_dir_path(d),
                rr_name=d.rsplit("/", 1)[-1],
                joliet_path="/" + d,
                file_mode=0o040555,
            )
        for rel in sorted(files):
            data, mode = files[rel]
            iso.add_fp(
                io.BytesIO(data),
                len(data),
                _iso_path(rel),
                rr_name=rel.rsplit("/", 1)[-1],
                joliet_path="/" + rel,
                file_mode=0o100000 | mode,
            )
        tmp = out_path.with_name(out_path.name + ".tmp")
        try:
            with open(tmp, "wb") as fh:
                iso.write_fp(fh)
            tmp.replace(out_path)
        finally:
            iso.close()
            tmp.unlink(missing_ok=True)


def collect_files(
    dirs: PackagingDirs, work: Path, version: str, epoch: int, cache_dir: Path | None
) -> dict[str, tuple[bytes, int]]:
    pyz = build_agent_zipapp(work / "kvmmanager-agent.pyz")
    packages = build_agent_packages(
        pyz, version, work / "packages", epoch=epoch, cache_dir=cache_dir, dirs=dirs
    )
    files: dict[str, tuple[bytes, int]] = {
        "kvmmanager-agent.pyz": (pyz.read_bytes(), 0o644),
        "VERSION": (f"{version}\n".encode(), 0o644),
    }
    for rel, (src, mode) in _STATIC.items():
        files[rel] = ((dirs.agent / src).read_bytes(), mode)
    for kind, path in packages.items():
        files[f"packages/{_PKG_NAMES[kind]}"] = (path.read_bytes(), 0o644)
    sums = "".join(f"{hashlib.sha256(files[rel][0]).hexdigest()}  {rel}\n" for rel in sorted(files))
    files["SHA256SUMS"] = (sums.encode(), 0o644)
    return files


def build_iso(
    out_path: Path | str | None = None,
    *,
    source_date_epoch: int | None = None,
    cache_dir: Path | None = None,
    dirs: PackagingDirs | None = None,
) -> IsoBuild:
    """Build the agent ISO at `out_path` (a directory gets kvmmanager-guest-agent.iso)."""
    dirs = dirs or packaging_dirs()
    out = Path(out_path) if out_path is not None else Path.cwd() / ISO_NAME
    if out.is_dir():
        out = out / ISO_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    epoch = source_date_epoch if source_date_epoch is not None else default_epoch(dirs)
    version = agent_version()
    with tempfile.TemporaryDirectory(prefix="kvmm-iso-") as tmp:
        files = collect_files(dirs, Path(tmp), version, epoch, cache_dir)
    master_iso(files, out, epoch)
    data = out.read_bytes()
    return IsoBuild(
        path=out,
        version=version,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        epoch=epoch,
        files={rel: hashlib.sha256(files[rel][0]).hexdigest() for rel in files},
    )
