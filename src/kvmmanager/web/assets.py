"""Static files: our own CSS/JS, and the npm libraries (htmx, noVNC, xterm.js, uPlot,
Swagger UI).

The npm packages are installed by `scripts/setup` into `node_modules/` (never committed).
The release (packaging/release.py) copies the trees below into the wheel as package data
under kvmmanager/web/vendor/, laid out like node_modules, so an installed package serves
them with no node_modules; `KVMM_WEB__VENDOR_DIR` may point elsewhere. Only the files the
pages use are exposed, under stable names, so a library's layout change breaks one table here.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from kvmmanager.core.errors import NotFound

STATIC_DIR = Path(__file__).parent / "static"
# Filled by the release build only (never committed, see .gitignore).
PACKAGED_VENDOR_DIR = Path(__file__).parent / "vendor"

# URL prefix under /vendor -> directory inside node_modules.
VENDOR_TREES = {
    "htmx": "htmx.org/dist",
    "htmx-sse": "htmx-ext-sse",
    "novnc": "@novnc/novnc",
    "xterm": "@xterm/xterm",
    "xterm-fit": "@xterm/addon-fit",
    "uplot": "uplot/dist",
    "swagger-ui": "swagger-ui-dist",  # the API docs page (api/docs.py)
}


def vendor_dir() -> Path:
    env = os.environ.get("KVMM_WEB__VENDOR_DIR")
    if env:
        return Path(env)
    if PACKAGED_VENDOR_DIR.is_dir():
        return PACKAGED_VENDOR_DIR
    # Source checkout: <repo>/src/kvmmanager/web -> <repo>/node_modules
    return Path(__file__).resolve().parents[3] / "node_modules"


def mount_assets(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    root = vendor_dir()
    for prefix, sub in VENDOR_TREES.items():
        path = root / sub
        if not path.is_dir():
            raise NotFound(
                f"front-end library missing: {path} (run scripts/setup, which runs `npm ci`)"
            )
        app.mount(f"/vendor/{prefix}", StaticFiles(directory=path), name=f"vendor-{prefix}")
