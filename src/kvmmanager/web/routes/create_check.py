"""The create form's live check of the VM's name with the volumes named after it: asked
by the name field (and the pool and disk fields) while the user types, answered beside
the name before anything is submitted."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from kvmmanager.api.deps import ManagerDep, OperatorUser
from kvmmanager.core.errors import KvmmError
from kvmmanager.services.vms.name_check import NameCheck, check_new_name, new_volume_names
from kvmmanager.web.templating import render

router = APIRouter(include_in_schema=False)
# The name field holds at most 64 characters; anything longer is cut before any work.
MAX_INPUT = 200


@router.get("/vms/new/check-name", name="web.vm_new_check_name", response_class=HTMLResponse)
async def check_name(
    request: Request,
    *,
    host: str = "",
    name: str = "",
    source: str = "",
    disk_pool: str = "",
    disk_gib: str = "",
    manager: ManagerDep,
    _user: OperatorUser,
) -> HTMLResponse:
    name = name[:MAX_INPUT]
    try:
        new_disk = float(disk_gib or 0) > 0
    except ValueError:
        new_disk = False
    volumes = new_volume_names(name, source[:16], new_disk)
    if not name:
        check = NameCheck(name)
    else:
        try:
            check = await check_new_name(manager.vms, host, name, disk_pool or None, volumes)
        except KvmmError as e:  # the host or pool: said, but the name is not refused
            check = NameCheck(name, None, (), None)
            return render(request, "vms/_name_check.html", check=check, unknown=e.message)
    return render(request, "vms/_name_check.html", check=check, unknown=None)
