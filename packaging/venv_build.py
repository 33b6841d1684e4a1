"""The manager's virtualenv, built at package build time and shipped inside the .deb
(dh-virtualenv style): dpkg owns every file (`dpkg -S`, debsums, a true Installed-Size),
no pip runs in a maintainer script, and nothing compiled sits under /usr/share.

Built with the interpreter the package depends on (/usr/bin/python3.11: the wheels are
cp311 builds) at a staging path, then every mention of that path is rewritten to the
installed one (script shebangs, pyvenv.cfg); a venv's interpreter links are absolute
(/usr/bin/python3.11), so the tree works once unpacked at VENV.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

VENV = "/usr/lib/kvm-manager/venv"
PYTHON = "/usr/bin/python3.11"


def build_venv(stage_root: Path, wheels: Path, python: str = PYTHON) -> Path:
    """stage_root/<VENV> with kvmmanager and its dependencies from `wheels` only."""
    venv = stage_root / VENV.lstrip("/")
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
    # pip from the build venv, run for the target interpreter; nothing from the caller's
    # pip settings (env -i, PIP_CONFIG_FILE=/dev/null) and no network (--no-index).
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PIP_CONFIG_FILE": os.devnull}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin/python"),
            "install",
            "--quiet",
            "--no-index",
            "--no-compile",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--find-links",
            str(wheels),
            "kvmmanager",
        ],
        env=env,
        check=True,
    )
    # Nobody activates a service's venv, and the scripts would name the staging path.
    for script in venv.glob("bin/[Aa]ctivate*"):
        script.unlink()
    # direct_url.json records the staging wheel's file:// URL; drop it and its RECORD line.
    for direct in venv.glob("lib/python3.*/site-packages/*.dist-info/direct_url.json"):
        record = direct.parent / "RECORD"
        lines = record.read_text().splitlines(keepends=True)
        record.write_text(
            "".join(x for x in lines if not x.startswith(f"{direct.parent.name}/direct_url.json,"))
        )
        direct.unlink()
    staged, final = str(venv).encode(), VENV.encode()
    for path in venv.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if staged in data:
                path.write_bytes(data.replace(staged, final))
    for cache in list(venv.rglob("__pycache__")):
        shutil.rmtree(cache)
    # A relative interpreter link (Debian policy 10.5: links within /usr are relative).
    link = venv / "bin" / Path(python).name
    if link.is_symlink() and os.readlink(link) == python:
        link.unlink()
        link.symlink_to(os.path.relpath(python, VENV + "/bin"))
    for path in venv.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        if path.suffix == ".so" or ".so." in path.name:
            # Wheels ship their extension modules with symbols, dh_strip would drop them.
            subprocess.run(["strip", "--strip-unneeded", str(path)], check=True)
        elif path.stat().st_mode & 0o111 and "bin" not in path.relative_to(venv).parts[:1]:
            # Executable bits some wheels leave on modules (e.g. their tests).
            with path.open("rb") as f:
                if f.read(2) != b"#!":
                    path.chmod(path.stat().st_mode & ~0o111)
    # Reproducible: every timestamp from SOURCE_DATE_EPOCH (nfpm keeps file mtimes).
    if epoch := os.environ.get("SOURCE_DATE_EPOCH"):
        for path in [venv, *venv.rglob("*")]:
            os.utime(path, (int(epoch), int(epoch)), follow_symlinks=False)
    return venv
