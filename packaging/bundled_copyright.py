"""debian/copyright of the manager .deb: our own stanza (packaging/copyright) plus one
per bundled project, generated at build time from what is really bundled — each wheel's
METADATA (License-Expression, else a one-line License, else its licence classifiers) and
each front-end npm package's package.json `license` — so it cannot drift from the wheels.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

# Where the venv (packaging/venv_build.py) installs the wheels.
SITE = "usr/lib/kvm-manager/venv/lib/python3.11/site-packages"
# The licences whose full text Debian ships in /usr/share/common-licenses.
COMMON = {
    "Apache-2.0": "Apache-2.0",
    "GPL-2.0-or-later": "GPL-2",
    "LGPL-2.1-only": "LGPL-2.1",
    "LGPL-2.0-or-later": "LGPL-2",
    "MPL-2.0": "MPL-2.0",
}
CLASSIFIERS = {
    "MIT License": "MIT",
    "BSD License": "BSD",
    "Apache Software License": "Apache-2.0",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "ISC License (ISCL)": "ISC",
}
# A LICENSE file's title line, where the metadata names no licence.
TITLES = {"BSD Zero Clause License": "0BSD", "MIT License": "MIT"}
ALIASES = {"LGPL-v2.0-or-later": "LGPL-2.0-or-later", "ISC License": "ISC", "MIT License": "MIT"}


@dataclass(frozen=True)
class Bundled:
    name: str
    version: str
    files: str  # a DEP-5 Files pattern
    licence: str  # a DEP-5 licence expression ("and"/"or")
    holder: str


def _expression(text: str) -> str:
    text = ALIASES.get(text.strip(), text.strip())
    return re.sub(r"\s+(AND|OR)\s+", lambda m: f" {m.group(1).lower()} ", text)


def wheel_project(wheel: Path) -> Bundled:
    with zipfile.ZipFile(wheel) as z:
        (meta,) = (n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = Parser().parsestr(z.read(meta).decode())
    licence = msg.get("License-Expression") or ""
    one_line = (msg.get("License") or "").strip()
    if not licence and one_line and "\n" not in one_line and len(one_line) < 60:
        licence = one_line
    if not licence:
        found = [
            CLASSIFIERS.get(c.rsplit("::", 1)[1].strip(), c.rsplit("::", 1)[1].strip())
            for c in msg.get_all("Classifier") or []
            if c.startswith("License ::")
        ]
        licence = " or ".join(found)
    if licence == "BSD":
        # The classifier does not say which BSD: the licence text does (clause 3 is the
        # "Neither the name ..." endorsement clause).
        text = _dist_info_licence(wheel)
        licence = "BSD-3-Clause" if "Neither the name" in text else "BSD-2-Clause"
    if not licence:
        raise SystemExit(f"release: {wheel.name} names no licence; add it to bundled_copyright")
    holder = msg.get("Author") or msg.get("Author-email") or msg.get("Maintainer-email") or ""
    holder = holder.replace("\n", " ").strip() or f"the {msg['Name']} authors"
    return Bundled(
        msg["Name"],
        msg["Version"],
        " ".join(_installed_patterns(wheel)),
        _expression(licence),
        holder,
    )


def _installed_patterns(wheel: Path) -> list[str]:
    """What the wheel puts into site-packages: its top-level packages/modules and its
    .dist-info (the .data scripts are the venv's bin/ entry points)."""
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    tops = {n.split("/", 1)[0]: "/" in n for n in names if not n.split("/", 1)[0].endswith(".data")}
    return [
        f"{SITE}/{top}/*" if is_dir else f"{SITE}/{top}" for top, is_dir in sorted(tops.items())
    ]


def _dist_info_licence(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if ".dist-info/" in n and "LICEN" in n.upper()]
        return "".join(z.read(n).decode(errors="replace") for n in names)


def npm_project(package_dir: Path, served_as: str) -> Bundled:
    data = json.loads((package_dir / "package.json").read_text())
    licence = str(data.get("license") or "")
    if not licence:
        for path in sorted(package_dir.glob("LICEN[CS]E*")):
            lines = path.read_text(errors="replace").strip().splitlines()
            licence = TITLES.get(lines[0].strip(), "") if lines else ""
    if not licence:
        raise SystemExit(f"release: npm package {data['name']} names no licence we know")
    author = data.get("author") or ""
    if isinstance(author, dict):
        author = author.get("name", "")
    return Bundled(
        data["name"],
        data["version"],
        f"{SITE}/kvmmanager/web/vendor/{served_as}/*",
        _expression(licence),
        author or f"the {data['name']} authors",
    )


def _atoms(expression: str) -> list[str]:
    return [a for a in re.split(r"\s+(?:and|or)\s+|[()]", expression) if a.strip()]


def render(own: str, projects: list[Bundled]) -> str:
    out = [own.rstrip("\n")]
    atoms: set[str] = set()
    for p in sorted(projects, key=lambda p: p.name.lower()):
        out.append(
            f"Files: {p.files}\nCopyright: {p.holder}\nLicense: {p.licence}\n"
            f"Comment: {p.name} {p.version}, bundled"
        )
        atoms.update(a.strip() for a in _atoms(p.licence))
    for atom in sorted(atoms):
        if atom in COMMON:
            text = f"/usr/share/common-licenses/{COMMON[atom]}"
            body = f" On Debian systems the full text is in `{text}'."
        else:
            body = (
                " The full text travels with the project: its wheel's .dist-info (installed\n"
                " under /usr/lib/kvm-manager/venv) or its npm package's LICENSE file."
            )
        out.append(f"License: {atom}\n{body}")
    return "\n\n".join(out) + "\n"
