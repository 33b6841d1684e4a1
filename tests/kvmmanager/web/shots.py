"""Screenshots of every page the browser tests visit, on every run.

They go to $KVMM_SCREENSHOTS, or else `<repo>/.artifacts/screenshots/` (gitignored), one
PNG per page and state, named `<page>-<state>.png`; the README's pictures are copied
from there. A run overwrites the previous run's pictures of the same name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]


def shots_dir() -> Path:
    return Path(os.environ.get("KVMM_SCREENSHOTS") or REPO / ".artifacts" / "screenshots")


def shot(page: Any, name: str, full_page: bool = True) -> Path:
    """Saves what the page shows now as `<name>.png` and returns its path."""
    folder = shots_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
