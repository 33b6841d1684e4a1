"""The create flow's first step: pick the operating system from osinfo-db (searchable),
then its recommended settings fill the form's later steps, each with its reason."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from kvmmanager.api.deps import require_role
from kvmmanager.core.errors import KvmmError
from kvmmanager.services.users.service import Principal
from kvmmanager.services.vms import osinfo
from kvmmanager.web.templating import render

router = APIRouter(include_in_schema=False)


@router.get("/vms/new/os", name="web.vm_new_os", response_class=HTMLResponse)
async def os_search(
    request: Request, os_query: str = "", _user: Principal = Depends(require_role("operator"))
) -> HTMLResponse:
    nearest = None
    try:
        found, error = osinfo.search(os_query), None
        if not found and os_query.strip():
            nearest = osinfo.nearest(os_query)
    except KvmmError as e:
        found, error = [], e.message
    return render(
        request, "vms/_os_results.html", found=found, query=os_query, error=error, nearest=nearest
    )


@router.get("/vms/new/os-defaults", name="web.vm_new_os_defaults", response_class=HTMLResponse)
async def os_defaults(
    request: Request, os: str = "", _user: Principal = Depends(require_role("operator"))
) -> HTMLResponse:
    try:
        picked, error = osinfo.defaults(os), None
    except KvmmError as e:
        picked, error = None, e.message
    return render(request, "vms/_os_defaults.html", picked=picked, error=error)
