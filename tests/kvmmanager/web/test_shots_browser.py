"""The screenshots' structural comparison (shots.py): a page whose times and counters
changed has the same outline; a page that lost a button or gained a heading does not, and
the difference is written for a person to look at."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.kvmmanager.web.shots import CHANGES, shot

pytestmark = pytest.mark.browser

PAGE = """<main><h1>VM {n}</h1><p>since 2026-12-07 05:{n}:00, {n} MiB</p>
<label>Name <input name="name"></label>{extra}<button>Start</button></main>"""


def test_outline_ignores_values_and_names_structural_changes(
    chromium: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KVMM_SCREENSHOTS", str(tmp_path))
    page = chromium.new_page()
    try:
        page.set_content(PAGE.format(n=10, extra=""))
        shot(page, "demo")
        page.set_content(PAGE.format(n=42, extra=""))
        shot(page, "demo")
        assert not (tmp_path / "demo.structure.diff").exists()
        page.set_content(PAGE.format(n=42, extra="<h2>Pending</h2><button>Stop</button>"))
        shot(page, "demo")
    finally:
        page.close()
    diff = (tmp_path / "demo.structure.diff").read_text()
    assert "+  h2 Pending" in diff and "+  button Stop" in diff, diff
    assert "since" not in diff and "MiB" not in diff
    assert (tmp_path / CHANGES).read_text() == "demo\n"
    assert (tmp_path / "demo.png").stat().st_size > 0
