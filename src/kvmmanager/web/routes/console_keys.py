"""The console's send-key menu: key combinations a browser keeps for itself (Ctrl+Alt+Del,
Ctrl+Alt+Fn, F-keys), pressed in the guest by libvirt (services/vms/keys.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import Response

from kvmmanager.api.deps import ManagerDep
from kvmmanager.services.vms.keys import send_keys
from kvmmanager.web.templating import toast_headers

router = APIRouter(include_in_schema=False)


@router.post("/vms/{host}/{vm}/console/keys", name="web.vm_console_keys")
async def console_keys(
    host: str,
    vm: str,
    keys: Annotated[str, Form()],
    manager: ManagerDep,
) -> Response:
    result = await send_keys(manager.vms, host, vm, keys)
    return Response(status_code=204, headers=toast_headers(result.message))
