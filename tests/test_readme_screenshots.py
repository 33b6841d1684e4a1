"""scripts/readme-screenshots: the README's pictures are copied from the browser suite's
artifacts, each one the README shows, and nothing is copied while one is missing."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "readme-screenshots"


def _run(artifacts: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KVMM_SCREENSHOTS": str(artifacts), "KVMM_README_SCREENSHOTS": str(dest)}
    return subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, check=False)


def _mapping() -> list[tuple[str, str]]:
    return re.findall(r"^(\S+\.png) (\S+\.png) \S+$", SCRIPT.read_text(), re.M)


def test_every_readme_picture_is_copied_from_an_artifact(tmp_path: Path) -> None:
    shown = set(re.findall(r"\(docs/screenshots/([^)]+\.png)\)", (REPO / "README.md").read_text()))
    pairs = _mapping()
    assert {picture for picture, _ in pairs} == shown
    artifacts, dest = tmp_path / "artifacts", tmp_path / "dest"
    artifacts.mkdir()
    dest.mkdir()
    for _, artifact in pairs:
        (artifacts / artifact).write_bytes(b"\x89PNG " + artifact.encode())
    done = _run(artifacts, dest)
    assert done.returncode == 0, done.stderr
    for picture, artifact in pairs:
        assert (dest / picture).read_bytes() == b"\x89PNG " + artifact.encode()


def test_a_missing_artifact_copies_nothing_and_names_its_test(tmp_path: Path) -> None:
    artifacts, dest = tmp_path / "artifacts", tmp_path / "dest"
    artifacts.mkdir()
    dest.mkdir()
    pairs = _mapping()
    for _, artifact in pairs[1:]:
        (artifacts / artifact).write_bytes(b"\x89PNG")
    done = _run(artifacts, dest)
    assert done.returncode == 1
    assert pairs[0][1] in done.stderr and "test_" in done.stderr
    assert list(dest.iterdir()) == []
