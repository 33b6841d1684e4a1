"""The agent zipapp that goes onto the ISO and into the packages.

The agent package owns how it is zipped (`kvmmanager_agent.build.build_zipapp`); this
module calls it. Until that module exists in a checkout, a minimal deterministic zipapp
of the `kvmmanager_agent` sources is made here instead (same layout: the package plus a
`__main__.py` that runs `kvmmanager_agent.__main__`).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

_FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def build_agent_zipapp(out_path: Path) -> Path:
    try:
        from kvmmanager_agent.build import build_zipapp
    except ImportError:
        return _fallback_zipapp(out_path)
    build_zipapp(out_path)
    return out_path


def _fallback_zipapp(out_path: Path) -> Path:
    import kvmmanager_agent

    pkg = Path(kvmmanager_agent.__file__).parent
    files = sorted(p for p in pkg.rglob("*.py") if "__pycache__" not in p.parts and p.is_file())
    tmp = out_path.with_name(out_path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(b"#!/usr/bin/env python3\n")
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            main = zipfile.ZipInfo("__main__.py", _FIXED_DATE)
            main.external_attr = 0o644 << 16
            zf.writestr(main, "from kvmmanager_agent.__main__ import main\nmain()\n")
            for path in files:
                info = zipfile.ZipInfo(
                    f"kvmmanager_agent/{path.relative_to(pkg).as_posix()}", _FIXED_DATE
                )
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
    tmp.replace(out_path)
    return out_path
