"""Screenshots of every page the browser tests visit, on every run, each compared with
its previous version by structure.

They go to $KVMM_SCREENSHOTS, or else `<repo>/.artifacts/screenshots/` (gitignored), one
PNG per page and state, named `<page>-<state>.png`; the README's pictures are copied
from there. A run overwrites the previous run's pictures of the same name.

Beside each PNG, `<name>.structure.txt` is the page's outline as a person reads it: the
visible headings, landmarks, tables, fields, buttons and alerts in document order, with
their labels, digits masked (times, sizes, counters and UUIDs change from run to run,
never what is on the page). When the previous run left an outline that differs, the
difference goes to `<name>.structure.diff` and its name to `structure-changes.txt`, for a
person to look at with both pictures; an unchanged outline removes a stale diff.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
CHANGES = "structure-changes.txt"
# What a person reads on a page: headings, landmarks, tables, fields, buttons, alerts.
OUTLINE_JS = """() => {
  const pick = "h1,h2,h3,nav,main,header,footer,section[aria-labelledby],table,th,"
    + "label,button,select,textarea,input:not([type=hidden]),a.button,[role=alert],.toast,legend";
  const seen = (el) => el.getClientRects().length > 0
    && getComputedStyle(el).visibility !== "hidden";
  return Array.from(document.querySelectorAll(pick)).filter(seen).map((el) => {
    let depth = 0;
    for (let p = el.parentElement; p; p = p.parentElement) depth++;
    const role = el.getAttribute("role") || el.tagName.toLowerCase();
    let text = el.matches("label") ? (el.firstChild && el.firstChild.textContent) || ""
      : el.matches("input,select,textarea") ? (el.getAttribute("aria-label") || el.name || "")
      : el.matches("table,nav,main,header,footer,section")
        ? (el.getAttribute("aria-label") || el.id || "")
      : el.innerText || el.getAttribute("aria-label") || "";
    return { depth, role, text: text.replace(/\\s+/g, " ").trim().slice(0, 80) };
  });
}"""


def shots_dir() -> Path:
    return Path(os.environ.get("KVMM_SCREENSHOTS") or REPO / ".artifacts" / "screenshots")


def outline(items: list[dict[str, Any]]) -> str:
    """The page outline, one line per element, indented by its relative depth; digits
    masked so that values measured at run time never count as a change of structure."""
    base = min((i["depth"] for i in items), default=0)
    lines = []
    for i in items:
        text = re.sub(r"\d+", "#", i["text"])
        lines.append(f"{'  ' * min(i['depth'] - base, 20)}{i['role']} {text}".rstrip())
    return "\n".join(lines) + "\n"


def compare(folder: Path, name: str, now: str) -> str:
    """Writes `now` as `name`'s outline; returns the difference from the previous one
    ("" when there was none or it is the same), kept as `<name>.structure.diff`."""
    current, diff_file = folder / f"{name}.structure.txt", folder / f"{name}.structure.diff"
    before = current.read_text() if current.exists() else None
    current.write_text(now)
    if before is None or before == now:
        diff_file.unlink(missing_ok=True)
        return ""
    diff = "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True), now.splitlines(keepends=True),
            f"{name} (previous run)", f"{name} (this run)",
        )
    )  # fmt: skip
    diff_file.write_text(diff)
    with (folder / CHANGES).open("a") as f:
        f.write(f"{name}\n")
    return diff


def shot(page: Any, name: str, full_page: bool = True) -> Path:
    """Saves what the page shows now as `<name>.png`, compares its outline with the
    previous run's, and returns the picture's path."""
    folder = shots_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    compare(folder, name, outline(page.evaluate(OUTLINE_JS)))
    return path
