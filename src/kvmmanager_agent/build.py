"""Build kvmmanager-agent.pyz: the agent package as one deterministic zipapp.

Deterministic: entries sorted, every timestamp fixed from SOURCE_DATE_EPOCH (default:
1980-01-01, the zip epoch), fixed permissions, no __pycache__. Same sources, same
bytes: the ISO that carries it is reproducible too.

    python -m kvmmanager_agent.build OUT.pyz
"""

from __future__ import annotations

import os
import sys
import time
import zipfile
from typing import List, Optional, Tuple

SHEBANG = b"#!/usr/bin/env python3\n"
ZIP_EPOCH = 315532800  # 1980-01-01T00:00:00Z


def _pkg_dir() -> str:
    return os.path.dirname(os.path.abspath(__file__))


def _sources() -> List[Tuple[str, str]]:
    pkg_dir = _pkg_dir()
    out = []
    for dirpath, dirnames, filenames in os.walk(pkg_dir):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in filenames:
            if name.endswith(".py"):
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, os.path.dirname(pkg_dir))
                out.append((rel.replace(os.sep, "/"), full))
    return sorted(out)


def build_zipapp(out_path: str) -> str:
    """Write the zipapp to `out_path` (made executable) and return the path."""
    epoch = max(int(os.environ.get("SOURCE_DATE_EPOCH", ZIP_EPOCH)), ZIP_EPOCH)
    stamp = time.gmtime(epoch)[:6]
    tmp = out_path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(SHEBANG)
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
            entries: List[Tuple[str, Optional[str]]] = [("__main__.py", None), *_sources()]
            for arcname, src in entries:
                # The zipapp's entry point is zipmain.py (runs the agent from cached bytecode).
                with open(src or os.path.join(_pkg_dir(), "zipmain.py"), "rb") as sf:
                    data = sf.read()
                info = zipfile.ZipInfo(arcname, date_time=stamp)
                # The entry point is stored: unpacking it needs no zlib in the agent.
                stored = arcname == "__main__.py"
                info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                info.create_system = 3  # unix, whatever builds it
                zf.writestr(info, data)
    os.chmod(tmp, 0o755)  # noqa: S103 (an executable zipapp)
    os.replace(tmp, out_path)
    return out_path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python -m kvmmanager_agent.build OUT.pyz\n")
        sys.exit(2)
    print(build_zipapp(sys.argv[1]))
