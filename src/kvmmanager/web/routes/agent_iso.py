"""The agent ISO page: the version this manager ships, what each host has deployed,
deploy (a job with progress), and a download link of the ISO itself."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from kvmmanager.api.deps import CurrentUser, ManagerDep
from kvmmanager.core.errors import KvmmError
from kvmmanager.iso import agent_version
from kvmmanager.services.manager import Manager
from kvmmanager.web.templating import refresh_with_toast, render, toast_headers

router = APIRouter(include_in_schema=False)


async def _row(manager: Manager, host: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"host": host.name, "status": None, "error": ""}
    if not host.connected:
        row["error"] = f"host is {host.status}"
        return row
    try:
        row["status"] = await manager.iso.status(host.name)
    except KvmmError as e:
        row["error"] = e.message
    return row


@router.get("/agent-iso", name="web.agent_iso", response_class=HTMLResponse)
async def agent_iso(request: Request, manager: ManagerDep) -> HTMLResponse:
    rows = await asyncio.gather(*(_row(manager, h) for h in manager.registry.all()))
    return render(request, "agent_iso.html", active="agent-iso", rows=rows, version=agent_version())


@router.post("/agent-iso/{host}/deploy", name="web.agent_iso_deploy")
async def deploy(host: str, manager: ManagerDep, user: CurrentUser) -> Response:
    job_id = manager.iso.start_deploy_job(host, user=user)
    job = await manager.jobs.wait(job_id)
    if job.state != "done":
        message = (job.error or {}).get("message", "deploy failed")
        return Response(status_code=502, headers=toast_headers(message, "error"))
    action = (job.result or {}).get("action", "done")
    return refresh_with_toast(f"agent ISO on {host}: {action}")


@router.get("/agent-iso/download", name="web.agent_iso_download")
async def download(manager: ManagerDep) -> FileResponse:
    location, _sha = await manager.iso.local_iso()
    assert location.path is not None  # local_iso() finds or builds one, else raises
    return FileResponse(
        location.path,
        media_type="application/x-iso9660-image",
        filename="kvmmanager-guest-agent.iso",
    )
