"""GET /api/hosts/{host}/health: the doctor's checks for one host (viewer and up).

The answer is 200 with the report whatever the checks say; `status` is the worst check
(ok / warn / fail), each check carries the command that fixes it. `network` and `pool`
name what to check (default: the `default` network and the agent ISO pool).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from kvmmanager.api.deps import ManagerDep
from kvmmanager.api.schemas.common import ERROR_RESPONSES
from kvmmanager.api.schemas.doctor import HealthOut

router = APIRouter(tags=["doctor"], responses=ERROR_RESPONSES)


@router.get("/api/hosts/{host}/health", name="doctor.health", response_model=HealthOut)
async def host_health(
    host: str,
    *,
    network: str = Query("default", max_length=256),
    pool: str | None = Query(None, max_length=256),
    manager: ManagerDep,
) -> dict[str, Any]:
    return (await manager.doctor.check(host, network=network, pool=pool)).to_dict()
