"""The guest-agent ISO: where it is, what a host has, deploy it, put it into a VM.

GET  /api/agent-iso                              the local ISO and every fallback tried
GET  /api/hosts/{host}/agent-iso                 what is deployed in the host's pool
POST /api/hosts/{host}/agent-iso/deploy          deploy (a job: 202 + job id, progress)
POST /api/hosts/{host}/agent-iso/install/{vm}    install-agent: channel, CD-ROM, ISO
POST /api/hosts/{host}/agent-iso/eject/{vm}      take the ISO out again

Writes need the operator role (the default for writes).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from kvmmanager.api.deps import CurrentUser, ManagerDep
from kvmmanager.api.schemas.agent_iso import (
    DeployRequest,
    EjectOut,
    InstallOut,
    InstallRequest,
    IsoStatusOut,
    LocationOut,
)
from kvmmanager.api.schemas.common import ERROR_RESPONSES, JobStarted

router = APIRouter(tags=["agent-iso"], responses=ERROR_RESPONSES)


@router.get("/api/agent-iso", name="agent_iso.locate", response_model=LocationOut)
async def locate(manager: ManagerDep) -> dict[str, Any]:
    loc = await manager.iso.locate(build=False)
    return {
        "path": str(loc.path) if loc.path else None,
        "source": loc.source,
        "version": loc.version,
        "current": loc.current,
        "candidates": [
            {
                "source": c.source,
                "path": c.path,
                "used": c.used,
                "reason": c.reason,
                "version": c.version,
            }
            for c in loc.candidates
        ],
    }


@router.get("/api/hosts/{host}/agent-iso", name="agent_iso.status", response_model=IsoStatusOut)
async def iso_status(host: str, *, pool: str | None = None, manager: ManagerDep) -> dict[str, Any]:
    return (await manager.iso.status(host, pool)).to_dict()


@router.post(
    "/api/hosts/{host}/agent-iso/deploy",
    name="agent_iso.deploy",
    response_model=JobStarted,
    status_code=status.HTTP_202_ACCEPTED,
)
async def deploy(
    host: str,
    *,
    body: DeployRequest | None = None,
    manager: ManagerDep,
    user: CurrentUser,
) -> dict[str, str]:
    pool = body.pool if body else None
    return {"job_id": manager.iso.start_deploy_job(host, pool, user)}


@router.post(
    "/api/hosts/{host}/agent-iso/install/{vm}",
    name="agent_iso.install",
    response_model=InstallOut,
)
async def install(
    host: str,
    vm: str,
    *,
    body: InstallRequest | None = None,
    manager: ManagerDep,
) -> dict[str, Any]:
    pool = body.pool if body else None
    replace_cd = body.replace_cd if body else False
    return (await manager.iso.install_agent(host, vm, pool, replace_cd=replace_cd)).to_dict()


@router.post(
    "/api/hosts/{host}/agent-iso/eject/{vm}", name="agent_iso.eject", response_model=EjectOut
)
async def eject(host: str, vm: str, manager: ManagerDep) -> dict[str, Any]:
    return await manager.iso.eject_agent(host, vm)
