"""The create flow's OS detection: when an ISO volume is picked (or uploaded), its primary
volume descriptor is read through libvirt and matched against osinfo-db's install media
(services/vms/iso_detect.py); a match becomes the chosen OS, with a note saying it was
detected from that ISO, unless the user chose an OS by hand, which stays."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from kvmmanager.api.deps import ManagerDep, OperatorUser
from kvmmanager.core.errors import KvmmError
from kvmmanager.services.vms import osinfo
from kvmmanager.services.vms.iso_detect import detect_iso_os
from kvmmanager.web.templating import render

router = APIRouter(include_in_schema=False)
# "pool/volume" of the ISO select, and an osinfo short id: both far shorter.
MAX_INPUT = 300


@router.get("/vms/new/iso-os", name="web.vm_new_iso_os", response_class=HTMLResponse)
async def iso_os(
    request: Request,
    *,
    host: str = "",
    iso: str = "",
    keep: str = "",
    manager: ManagerDep,
    user: OperatorUser,
) -> HTMLResponse:
    pool, _, volume = iso[:MAX_INPUT].partition("/")
    found = picked = None
    error = None
    try:
        manager.ownership.check_volumes(user, host, [(pool, volume)])
        found = await detect_iso_os(manager.vms, host, pool, volume)
        if found.os is not None and not keep[:MAX_INPUT]:
            picked = osinfo.defaults(found.os.short_id)
    except KvmmError as e:
        error = e.message
    kept = None
    if keep and found is not None and found.os is not None and found.os.short_id != keep:
        try:
            kept = osinfo.choice(keep[:MAX_INPUT])
        except KvmmError:
            kept = None
    return render(
        request,
        "vms/_iso_os.html",
        iso=volume,
        found=found,
        picked=picked,
        kept=kept,
        error=error,
        detected_from=volume,
    )
