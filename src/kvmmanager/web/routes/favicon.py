"""/favicon.ico: browsers ask for it on every first visit; answer with the product's icon
(an SVG, which every current browser takes from that address) instead of a 404."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from kvmmanager.api.deps import public

router = APIRouter(include_in_schema=False)
ICON = Path(__file__).resolve().parent.parent / "static" / "favicon.svg"


@router.get("/favicon.ico", name="web.favicon")
@public
def favicon() -> FileResponse:
    return FileResponse(
        ICON, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"}
    )
