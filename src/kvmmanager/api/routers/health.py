"""GET /api/health: unauthenticated liveness, deliberately saying nothing else."""

from __future__ import annotations

from fastapi import APIRouter

from kvmmanager.api.deps import public

router = APIRouter(prefix="/api", tags=["health"])


@router.get("/health", name="health.get")
@public
async def health() -> dict[str, str]:
    return {"status": "ok"}
