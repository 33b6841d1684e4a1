"""Snapshots and clones on the VM page: the tree, create (quiesced when an agent is
there), revert, delete, the per-VM quiesce policy, and cloning as a job."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from kvmmanager.api.deps import CurrentUser, ManagerDep
from kvmmanager.core.errors import Conflict, InvalidInput, KvmmError, NotFound
from kvmmanager.services.manager import Manager
from kvmmanager.web.routes._feedback import failed
from kvmmanager.web.templating import redirect_with_toasts, render, toast_headers, vm_gone_tab

router = APIRouter(include_in_schema=False)
# The states in which the clone service copies disks that change (its plan_clone's RUNNING).
RUNNING_STATES = ("running", "blocked", "paused")


async def _tab(
    request: Request, manager: Manager, host: str, vm: str, message: str | None = None
) -> HTMLResponse:
    return render(
        request,
        "vms/_snapshots.html",
        headers=toast_headers(message) if message else None,
        vm=manager.vms.get(host, vm),
        snaps=await manager.snapshots.list(host, vm),
        # What the service would name it: a person sees (and may keep) the name up front.
        default_name=time.strftime("snap-%Y%m%d-%H%M%S", time.gmtime()),
    )


@router.get("/vms/{host}/{vm}/snapshots", name="web.vm_snapshots", response_class=HTMLResponse)
async def snapshots_tab(request: Request, host: str, vm: str, manager: ManagerDep) -> HTMLResponse:
    try:
        manager.vms.get(host, vm)
    except NotFound:
        return vm_gone_tab(request, host)
    return await _tab(request, manager, host, vm)


# The form's "Memory state": Automatic lets the service choose what this VM's disks allow.
MEMORY_CHOICES = {"": None, "true": True, "false": False}


@router.post("/vms/{host}/{vm}/snapshots", name="web.vm_snapshot_create")
async def create_snapshot(
    request: Request,
    host: str,
    vm: str,
    *,
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    kind: Annotated[str, Form()] = "",
    memory: Annotated[str, Form()] = "",
    quiesce: Annotated[str, Form()] = "auto",
    manager: ManagerDep,
) -> HTMLResponse:
    try:
        if memory not in MEMORY_CHOICES:
            raise InvalidInput("Memory state must be Automatic, Include or Disks only")
        result = await manager.snapshots.create(
            host, vm, name=name or None, description=description or None, kind=kind or None,
            memory=MEMORY_CHOICES[memory], quiesce=quiesce,
        )  # fmt: skip
    except KvmmError as e:
        raise failed("Take snapshot", e) from e
    consistency = result.get("consistency") or {}
    how = consistency.get("message") or consistency.get("method") or ""
    return await _tab(request, manager, host, vm, f"Snapshot {result['name']} taken. {how}")


@router.post("/vms/{host}/{vm}/snapshots/{name}/revert", name="web.vm_snapshot_revert")
async def revert_snapshot(
    request: Request, host: str, vm: str, name: str, manager: ManagerDep
) -> HTMLResponse:
    await manager.snapshots.revert(host, vm, name)
    return await _tab(request, manager, host, vm, f"Reverted to {name}")


@router.post("/vms/{host}/{vm}/snapshots/{name}/delete", name="web.vm_snapshot_delete")
async def delete_snapshot(
    request: Request,
    host: str,
    vm: str,
    name: str,
    *,
    children: Annotated[bool, Form()] = False,
    manager: ManagerDep,
) -> HTMLResponse:
    try:
        result = await manager.snapshots.delete(host, vm, name, children=children)
    except KvmmError as e:
        raise failed(f"Delete snapshot {name}", e) from e
    deleted = result["deleted"]
    what = "snapshot" if len(deleted) == 1 else "snapshots"
    return await _tab(request, manager, host, vm, f"Deleted {what} {', '.join(deleted)}")


@router.post("/vms/{host}/{vm}/snapshots-policy", name="web.vm_quiesce_policy")
async def quiesce_policy(
    request: Request,
    host: str,
    vm: str,
    policy: Annotated[str, Form()],
    manager: ManagerDep,
) -> HTMLResponse:
    await manager.snapshots.set_quiesce_policy(host, vm, policy)
    return await _tab(request, manager, host, vm, f"Quiesce policy: {policy}")


@router.post("/vms/{host}/{vm}/clone", name="web.vm_clone")
async def clone_vm(
    host: str,
    vm: str,
    new_name: Annotated[str, Form()],
    *,
    mode: Annotated[str, Form()] = "full",
    consistent: Annotated[str, Form()] = "refuse",
    manager: ManagerDep,
    user: CurrentUser,
) -> Response:
    # The page posts to the VM's UUID address: the toast names the VM the user knows.
    info = manager.vms.get(host, vm)
    source = info.name
    if info.state in RUNNING_STATES and consistent != "snapshot":
        # The service's refusal names its API parameter; a page older than the VM's start
        # still posts this, and is told in the clone form's own words.
        raise Conflict(
            f"{source} is {info.state}: its disks change while they are copied. Shut it "
            "down to clone it (or, without snapshots of its own, clone it from a snapshot "
            "taken now)",
            field="vm",
        )
    job_id = await manager.clones.start(
        host, vm, new_name, mode=mode, consistent=consistent, user=user
    )
    job = await manager.jobs.wait(job_id)
    if job.state != "done":
        error = job.error or {}
        raise KvmmError(str(error.get("message") or "the clone failed"))
    return redirect_with_toasts(f"/vms/{host}/{new_name}", (f"Cloned {source} to {new_name}", "ok"))
