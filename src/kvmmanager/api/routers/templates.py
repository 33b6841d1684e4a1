"""Templates: /api/hosts/{host}/templates (list), PUT .../vms/{vm}/template (mark or
unmark), POST .../templates/{template}/deploy (a new VM from it, as a job)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from kvmmanager.api.deps import CurrentUser, ManagerDep
from kvmmanager.api.schemas.clones import DeployBody, TemplateMark, TemplateOut
from kvmmanager.api.schemas.common import ERROR_RESPONSES, JobStarted

router = APIRouter(tags=["templates"], responses=ERROR_RESPONSES)


@router.get("/api/hosts/{host}/templates", name="templates.list", response_model=list[TemplateOut])
async def list_templates(host: str, manager: ManagerDep) -> Any:
    return await manager.templates.list(host)


@router.get("/api/hosts/{host}/vms/{vm}/template", name="templates.get", response_model=TemplateOut)
async def get(host: str, vm: str, manager: ManagerDep) -> Any:
    """Whether the VM is a template, and which linked clones use its disks."""
    return await manager.templates.get(host, vm)


@router.put(
    "/api/hosts/{host}/vms/{vm}/template", name="templates.mark", response_model=TemplateOut
)
async def mark(host: str, vm: str, body: TemplateMark, manager: ManagerDep) -> Any:
    """Make a shut-off VM a template (autostart off), or a VM again (409 while linked
    clones use its disks)."""
    return await manager.templates.mark(host, vm, body.template)


@router.post(
    "/api/hosts/{host}/templates/{template}/deploy",
    name="templates.deploy",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobStarted,
)
async def deploy(
    host: str,
    template: str,
    body: DeployBody,
    manager: ManagerDep,
    user: CurrentUser,
) -> dict[str, Any]:
    job_id = await manager.templates.deploy(
        host, template, body.name, mode=body.mode, start=body.start, user=user
    )
    return {"job_id": job_id}
