"""Batch actions from the VM list: one action on the checked VMs and/or every VM with a
tag, through the batch service (bounded concurrency; one VM's failure does not stop the
others), answered with a result per VM.

VMs with an owner may be changed by that owner and admins only (as for one VM, see
api/deps.check_vm_owner): the others are reported as refused, not acted on.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from kvmmanager.api.deps import CurrentUser, ManagerDep
from kvmmanager.core.errors import InvalidInput, KvmmError
from kvmmanager.services.automation.batch import Target
from kvmmanager.services.manager import Manager
from kvmmanager.web.templating import render, toast_headers

router = APIRouter(include_in_schema=False)
LABELS = {
    "start": "Start",
    "shutdown": "Shut down",
    "reboot": "Reboot",
    "destroy": "Force off",
    "snapshot": "Snapshot",
    "delete": "Delete",
    "reset": "Reset",
    "suspend": "Pause",
    "resume": "Resume",
}


def _selected(values: list[str]) -> list[Target]:
    out = []
    for item in values:
        host, sep, vm = item.partition("/")
        if not sep or not host or not vm:
            raise InvalidInput(f"not a VM of the list: {item!r}", field="selected")
        out.append(Target(host, vm))
    return out


def _name(manager: Manager, t: Target) -> str:
    """A VM's display name (it may be named by UUID); unknown VMs keep what was sent."""
    try:
        return manager.inventory.domain(t.host, t.vm).name
    except KvmmError:
        return t.vm


@router.post("/vms/batch", name="web.vms_batch", response_class=HTMLResponse)
async def batch_action(
    request: Request,
    action: Annotated[str, Form()],
    *,
    selected: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI form default
    tag: Annotated[str, Form()] = "",
    remove_volumes: Annotated[bool, Form()] = False,
    manager: ManagerDep,
    user: CurrentUser,
) -> HTMLResponse:
    svc = manager.batch
    svc.check(action)  # InvalidInput naming the field for an unknown action
    targets = svc.resolve(_selected(selected), tag.strip() or None)
    names = {t: _name(manager, t) for t in targets}
    out = await svc.run(action, targets, remove_volumes=remove_volumes, actor=user)
    results: list[dict[str, Any]] = out["results"]
    for r in results:
        r["name"] = names.get(Target(r["host"], r["vm"]), r["vm"])
    failed = sum(1 for r in results if not r["ok"])
    label = LABELS.get(action, action)
    message = f"{label}: {len(results) - failed} of {len(results)} VMs done" + (
        f", {failed} failed" if failed else ""
    )
    return render(
        request,
        "ops/_batch_result.html",
        headers=toast_headers(message, "error" if failed else "ok"),
        label=label,
        results=results,
        failed=failed,
    )
