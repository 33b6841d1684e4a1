"""Backups page: backup policies (targets, retention, quiesce) with create / edit /
delete, "run now" with a result per VM, the snapshots each policy keeps per VM, and
restoring a VM to one of them (confirmed: what happened since is discarded)."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from kvmmanager.api.deps import current_user, get_manager
from kvmmanager.core.errors import Conflict, InvalidInput, KvmmError
from kvmmanager.services.backups import PolicySpec
from kvmmanager.services.batch import Target
from kvmmanager.services.manager import Manager
from kvmmanager.services.snapshot_quiesce import QUIESCE_REQUESTS
from kvmmanager.services.users import Principal
from kvmmanager.web.routes._forms import (
    TIMEZONES,
    form_of,
    host_choices,
    local_time,
    number,
    tag_choices,
    text,
    vm_choices,
    vm_targets,
)
from kvmmanager.web.templating import render, toast_headers

router = APIRouter(include_in_schema=False)


def _spec(form: Any, keep: dict[str, Any] | None = None) -> PolicySpec:
    """The policy from the form; `keep` (the policy being edited) supplies the settings
    this form does not show, so saving never resets them."""
    shown = {"name", "vms", "tag", "host", "keep_last", "keep_daily", "keep_weekly",
             "timezone", "quiesce"}  # fmt: skip
    others = {
        f.name: keep[f.name]
        for f in dataclasses.fields(PolicySpec)
        if keep and f.name not in shown and f.name in keep
    }
    return PolicySpec(
        **others,
        name=text(form, "name") or "",
        vms=vm_targets(form.getlist("vms")),
        tag=text(form, "tag"),
        host=text(form, "host"),
        keep_last=number(form, "keep_last", int, 0),
        keep_daily=number(form, "keep_daily", int, 0),
        keep_weekly=number(form, "keep_weekly", int, 0),
        timezone=text(form, "timezone") or "UTC",
        quiesce=text(form, "quiesce") or "auto",
    )


def _form_values(p: dict[str, Any] | None) -> dict[str, Any]:
    if p is None:
        return {"keep_last": 7, "keep_daily": 0, "keep_weekly": 0, "timezone": "UTC",
                "quiesce": "auto", "vms": []}  # fmt: skip
    return {**p, "vms": [f"{t['host']}/{t['vm']}" for t in p["vms"]]}


def _policies(manager: Manager) -> list[dict[str, Any]]:
    return [
        {**p, "last_local": local_time(p["last_run_at"], p["timezone"])}
        for p in manager.backups.list()
    ]


def _page(
    request: Request,
    manager: Manager,
    *,
    form: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    editing: str | None = None,
    template: str = "ops/backups.html",
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        template,
        status_code=status_code,
        active="backups",
        policies=_policies(manager),
        form=form or _form_values(None),
        errors=errors or {},
        editing=editing,
        quiesce_choices=QUIESCE_REQUESTS,
        timezones=TIMEZONES,
        vm_choices=vm_choices(manager),
        tag_choices=tag_choices(manager),
        host_choices=host_choices(manager),
    )


@router.get("/backups", name="web.backups", response_class=HTMLResponse)
def backups_page(
    request: Request,
    edit: str | None = None,
    manager: Manager = Depends(get_manager),
    _user: Principal = Depends(current_user),
) -> HTMLResponse:
    form = _form_values(manager.backups.get(edit)) if edit else None
    return _page(request, manager, form=form, editing=edit)


def _form_error(
    request: Request, manager: Manager, form: Any, exc: KvmmError, editing: str | None
) -> HTMLResponse:
    values: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    values["vms"] = form.getlist("vms")
    return _page(
        request,
        manager,
        form=values,
        errors={exc.field or "form": exc.message},
        editing=editing,
        status_code=422,  # the form swaps it in anyway (data-form-errors, app.js)
        template="ops/_policy_form.html",
    )


def _saved(message: str) -> Response:
    return Response(status_code=204, headers={**toast_headers(message), "HX-Redirect": "/backups"})


@router.post("/backups", name="web.backup_create", response_class=HTMLResponse)
async def create_policy(
    request: Request,
    manager: Manager = Depends(get_manager),
    user: Principal = Depends(current_user),
) -> Response:
    form = await form_of(request)
    try:
        out = manager.backups.create(_spec(form), created_by=user.username)
    except (InvalidInput, Conflict) as exc:
        return _form_error(request, manager, form, exc, None)
    return _saved(f"Backup policy {out['name']} created")


@router.post("/backups/{policy}", name="web.backup_update", response_class=HTMLResponse)
async def update_policy(
    request: Request, policy: str, manager: Manager = Depends(get_manager)
) -> Response:
    form = await form_of(request)
    current = manager.backups.get(policy)  # 404 for an unknown policy, not a form error
    try:
        out = manager.backups.replace(policy, _spec(form, keep=current))
    except (InvalidInput, Conflict) as exc:
        return _form_error(request, manager, form, exc, policy)
    return _saved(f"Backup policy {out['name']} saved")


@router.post("/backups/{policy}/delete", name="web.backup_delete")
def delete_policy(policy: str, manager: Manager = Depends(get_manager)) -> Response:
    manager.backups.delete(policy)
    return Response(
        status_code=204,
        headers={
            **toast_headers(f"Backup policy {policy} deleted; its snapshots stay"),
            "HX-Refresh": "true",
        },
    )


@router.post("/backups/{policy}/run", name="web.backup_run", response_class=HTMLResponse)
async def run_policy(
    request: Request, policy: str, manager: Manager = Depends(get_manager)
) -> HTMLResponse:
    result = await manager.backups.run(policy)
    level = "ok" if result["status"] == "ok" else "error"
    message = f"Backup {result['policy']}: {result['succeeded']} of {result['total']} VMs done" + (
        f", {result['failed']} failed" if result["failed"] else ""
    )
    return render(
        request,
        "ops/_backup_run.html",
        headers=toast_headers(message, level),
        result=result,
        policies=_policies(manager),
    )


async def _kept(manager: Manager, p: dict[str, Any]) -> list[dict[str, Any]]:
    """Per VM of the policy: the snapshots it made and keeps (or why they are unknown)."""
    targets = [Target(t["host"], t["vm"]) for t in p["vms"]]
    out = []
    for t in manager.batch.resolve(targets, p["tag"], p["host"]):
        entry: dict[str, Any] = {"host": t.host, "vm": t.vm, "snapshots": [], "error": None}
        try:
            entry["snapshots"] = await manager.backups.backups_of(p["id"], t.host, t.vm)
        except KvmmError as exc:
            entry["error"] = exc.message
        out.append(entry)
    return out


@router.get("/backups/{policy}/snapshots", name="web.backup_snapshots", response_class=HTMLResponse)
async def policy_snapshots(
    request: Request, policy: str, manager: Manager = Depends(get_manager)
) -> HTMLResponse:
    p = manager.backups.get(policy)
    return render(request, "ops/_policy_snapshots.html", policy=p, vms=await _kept(manager, p))


@router.post(
    "/backups/{policy}/restore/{host}/{vm}/{snapshot}",
    name="web.backup_restore",
    response_class=HTMLResponse,
)
async def restore(
    request: Request,
    policy: str,
    host: str,
    vm: str,
    snapshot: str,
    manager: Manager = Depends(get_manager),
) -> HTMLResponse:
    # The button asks first (data-confirm); the route is the confirmation.
    await manager.backups.restore(policy, host, vm, snapshot, confirm=True)
    p = manager.backups.get(policy)
    return render(
        request,
        "ops/_policy_snapshots.html",
        headers=toast_headers(f"VM {vm} restored to {snapshot}"),
        policy=p,
        vms=await _kept(manager, p),
    )
