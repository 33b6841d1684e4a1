"""Backups page: backup policies (targets, retention, quiesce, method: snapshots or
backups into a pool, full_every) with create / edit / delete, "run now" with a result per
VM, the snapshots each policy keeps per VM and restoring a VM to one of them (confirmed:
what happened since is discarded), and the backup images of pool policies (the `backups`
table) per VM: verify, restore to a new VM, restore over the original (confirmed),
delete. Verify and restores run as jobs whose progress the page follows.

Image routes carry /{host}/{vm} so the app-wide ownership rule (api/deps.check_vm_owner)
applies to them as to every per-VM write."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from kvmmanager.api.deps import CurrentUser, ManagerDep
from kvmmanager.core.errors import InvalidInput, KvmmError, NotFound
from kvmmanager.services.automation.batch import Target
from kvmmanager.services.backups import restore as rs
from kvmmanager.services.backups.policies import METHODS, PolicySpec
from kvmmanager.services.manager import Manager
from kvmmanager.services.snapshots.quiesce import QUIESCE_REQUESTS
from kvmmanager.services.users.service import Principal
from kvmmanager.services.vms.spec import validate_name
from kvmmanager.web.routes._forms import (
    TIMEZONES,
    EditorPage,
    FormState,
    form_of,
    host_choices,
    local_time,
    number,
    tag_choices,
    text,
    vm_choices,
    vm_targets,
)
from kvmmanager.web.templating import refresh_with_toast, render, toast_headers

router = APIRouter(include_in_schema=False)
EDITOR = EditorPage(
    "/backups", "ops/backups.html", "ops/_policy_form.html", "backups", lists=("vms",)
)


def _spec(form: Any, keep: dict[str, Any] | None = None) -> PolicySpec:
    """The policy from the form; `keep` (the policy being edited) supplies the settings
    this form does not show, so saving never resets them."""
    shown = {"name", "vms", "tag", "host", "keep_last", "keep_daily", "keep_weekly",
             "timezone", "quiesce", "method", "pool", "full_every"}  # fmt: skip
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
        method=text(form, "method") or "snapshot",
        pool=text(form, "pool"),
        full_every=number(form, "full_every", int, 7),
    )


def _form_values(p: dict[str, Any] | None) -> dict[str, Any]:
    if p is None:
        return {"keep_last": 7, "keep_daily": 0, "keep_weekly": 0, "timezone": "UTC",
                "quiesce": "auto", "vms": [], "method": "snapshot", "full_every": 7}  # fmt: skip
    return {**p, "vms": [f"{t['host']}/{t['vm']}" for t in p["vms"]]}


def _policies(manager: Manager) -> list[dict[str, Any]]:
    return [
        {**p, "last_local": local_time(p["last_run_at"], p["timezone"])}
        for p in manager.backups.list()
    ]


async def _pool_names(manager: Manager) -> list[str]:
    """Active pool names over every host, for the policy form's pool suggestions."""
    names: set[str] = set()
    for host in host_choices(manager):
        try:
            names.update(p.name for p in await manager.storage.list_pools(host) if p.active)
        except KvmmError:
            continue  # an unreachable host suggests nothing
    return sorted(names)


async def _page(request: Request, manager: Manager, state: FormState | None = None) -> HTMLResponse:
    return EDITOR.render(
        request,
        state or FormState(_form_values(None)),
        policies=_policies(manager),
        quiesce_choices=QUIESCE_REQUESTS,
        method_choices=METHODS,
        pool_choices=await _pool_names(manager),
        timezones=TIMEZONES,
        vm_choices=vm_choices(manager),
        tag_choices=tag_choices(manager),
        host_choices=host_choices(manager),
    )


@router.get("/backups", name="web.backups", response_class=HTMLResponse)
async def backups_page(
    request: Request,
    *,
    edit: str | None = None,
    manager: ManagerDep,
    _user: CurrentUser,
) -> HTMLResponse:
    state = FormState(_form_values(manager.backups.get(edit)), editing=edit) if edit else None
    return await _page(request, manager, state)


@router.post("/backups", name="web.backup_create", response_class=HTMLResponse)
async def create_policy(
    request: Request,
    manager: ManagerDep,
    user: CurrentUser,
) -> Response:
    def save(form: FormData) -> str:
        out = manager.backups.create(_spec(form), created_by=user.username)
        return f"Backup policy {out['name']} created"

    return await EDITOR.submit(request, save, partial(_page, request, manager))


@router.post("/backups/{policy}", name="web.backup_update", response_class=HTMLResponse)
async def update_policy(
    request: Request,
    policy: str,
    manager: ManagerDep,
    user: CurrentUser,
) -> Response:
    current = manager.backups.get(policy)  # 404 for an unknown policy, not a form error

    def save(form: FormData) -> str:
        out = manager.backups.replace(policy, _spec(form, keep=current), actor=user)
        return f"Backup policy {out['name']} saved"

    return await EDITOR.submit(request, save, partial(_page, request, manager), editing=policy)


@router.post("/backups/{policy}/delete", name="web.backup_delete")
def delete_policy(policy: str, manager: ManagerDep) -> Response:
    manager.backups.delete(policy)
    return refresh_with_toast(f"Backup policy {policy} deleted; its snapshots stay")


@router.post("/backups/{policy}/run", name="web.backup_run", response_class=HTMLResponse)
async def run_policy(
    request: Request,
    policy: str,
    manager: ManagerDep,
    user: CurrentUser,
) -> HTMLResponse:
    result = await manager.backups.run(policy, actor=user)
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
async def policy_snapshots(request: Request, policy: str, manager: ManagerDep) -> HTMLResponse:
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
    manager: ManagerDep,
    user: CurrentUser,
) -> HTMLResponse:
    # The button asks first (data-confirm); the route is the confirmation.
    await manager.backups.restore(policy, host, vm, snapshot, confirm=True, actor=user)
    p = manager.backups.get(policy)
    return render(
        request,
        "ops/_policy_snapshots.html",
        headers=toast_headers(f"VM {vm} restored to {snapshot}"),
        policy=p,
        vms=await _kept(manager, p),
    )


# ---- backup images (policies with a pool) --------------------------------------------

IMAGE = "/backup-images/{host}/{vm}/{backup_id}"
JOB_KINDS = ("backup.verify", "backup.restore")


def _grouped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Backups grouped per VM (newest first in each), VMs by name."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for b in rows:
        groups.setdefault((b["host"], b["vm"]), []).append(b)
    return [
        {"host": h, "vm": v, "backups": items}
        for (h, v), items in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]


def _images_page(request: Request, manager: Manager, policy: str | None, **kw: Any) -> HTMLResponse:
    """The backup images of one policy, or of every policy (deleted ones included)."""
    rows = manager.backups.images.list(policy=policy)
    return render(
        request,
        "ops/_backup_images.html",
        title=f"Backups made by {policy}" if policy else "All backups",
        policy=policy,
        vms=_grouped(rows),
        restore_errors=kw.pop("restore_errors", {}),
        restore_form=kw.pop("restore_form", {}),
        **kw,
    )


def _policy_of(manager: Manager, rec: dict[str, Any]) -> str | None:
    """The backup's policy name to list again, None (all) once the policy is gone."""
    try:
        return str(manager.backups.get(rec["policy_id"])["name"]) if rec["policy_id"] else None
    except NotFound:
        return None


@router.get("/backups/{policy}/images", name="web.backup_images", response_class=HTMLResponse)
def policy_images(request: Request, policy: str, manager: ManagerDep) -> HTMLResponse:
    return _images_page(request, manager, manager.backups.get(policy)["name"])


@router.get("/backup-images", name="web.backup_images_all", response_class=HTMLResponse)
def all_images(request: Request, manager: ManagerDep) -> HTMLResponse:
    return _images_page(request, manager, None)


def _job_view(manager: Manager, job_id: str) -> dict[str, Any]:
    job = manager.jobs.get(job_id)
    if job.kind not in JOB_KINDS:
        raise NotFound(f"no backup verify or restore job {job_id}", field="job_id")
    total = job.progress_total or 0
    return {
        "id": job.id,
        "kind": job.kind,
        "target": job.target,
        "state": job.state,
        "message": job.message,
        "pct": int(100 * (job.progress_done or 0) / total) if total else 0,
        "result": job.result or {},
        "error": job.error or {},
        "final": job.state in ("done", "failed", "cancelled"),
    }


def _job_started(
    request: Request,
    manager: Manager,
    kind: str,
    image: tuple[str, str, int],
    job: Callable[[Any], Awaitable[dict[str, Any]]],
    user: Principal,
) -> HTMLResponse:
    """Start a verify or restore job on one image; the job's panel the page follows."""
    host, vm, backup_id = image
    job_id = manager.jobs.start(kind, f"{host}/{vm}/{backup_id}", job, user, host=host)
    return render(request, "ops/_backup_job.html", job=_job_view(manager, job_id))


@router.get("/backup-images/jobs/{job_id}", name="web.backup_job", response_class=HTMLResponse)
def backup_job(request: Request, job_id: str, manager: ManagerDep) -> HTMLResponse:
    return render(request, "ops/_backup_job.html", job=_job_view(manager, job_id))


# The image routes repeat the path's parameters (host, vm, backup_id) on purpose: FastAPI
# reads each route's own signature; starting their jobs is one helper (_job_started).
@router.post(IMAGE + "/verify", name="web.backup_image_verify", response_class=HTMLResponse)
def verify_image(
    request: Request,
    host: str,
    vm: str,
    backup_id: int,
    manager: ManagerDep,
    user: CurrentUser,
) -> HTMLResponse:
    """Read the backup's volumes back through libvirt (sha256, qcow2 headers) as a job."""
    images = manager.backups.images
    images.get(backup_id, host, vm)  # 404 now, not a failed job

    async def job(progress: Any) -> dict[str, Any]:
        return await images.verify(backup_id, host, vm, progress=progress)

    return _job_started(request, manager, "backup.verify", (host, vm, backup_id), job, user)


@router.post(IMAGE + "/restore", name="web.backup_image_restore", response_class=HTMLResponse)
async def restore_image(
    request: Request,
    host: str,
    vm: str,
    backup_id: int,
    manager: ManagerDep,
    user: CurrentUser,
) -> HTMLResponse:
    """`mode=new` defines a new VM (`name`) on copies of the backup's disks; `mode=original`
    puts the backup back into the VM's own disks (shut off, no snapshots) and needs
    `confirm` (the button asks first). Bad input comes back beside its field."""
    form = await form_of(request)
    images = manager.backups.images
    rec = images.get(backup_id, host, vm)
    mode = text(form, "mode") or "new"
    name = text(form, "name")
    args: dict[str, Any] = dict(mode=mode, name=name, pool=text(form, "pool"),
                start=form.get("start") is not None, confirm=form.get("confirm") == "yes",
                host=host, vm=vm, created_by=user.username)  # fmt: skip
    try:
        rs.check_restore_args(mode, name, bool(args["confirm"]))
        if mode == "new":
            validate_name(name, "name")
    except InvalidInput as exc:
        return _images_page(
            request,
            manager,
            _policy_of(manager, rec),
            status_code=422,
            # The form's target is the job list; its errors replace the table instead.
            headers={"HX-Retarget": "#backup-images", "HX-Reswap": "outerHTML"},
            restore_errors={backup_id: {exc.field or "form": exc.message}},
            restore_form={backup_id: {k: v for k, v in form.items() if isinstance(v, str)}},
        )

    async def job(progress: Any) -> dict[str, Any]:
        return await images.restore(backup_id, progress=progress, **args)

    return _job_started(request, manager, "backup.restore", (host, vm, backup_id), job, user)


@router.post(IMAGE + "/delete", name="web.backup_image_delete", response_class=HTMLResponse)
async def delete_image(
    request: Request,
    host: str,
    vm: str,
    backup_id: int,
    manager: ManagerDep,
) -> HTMLResponse:
    rec = manager.backups.images.get(backup_id, host, vm)
    await manager.backups.images.delete(backup_id, host, vm)
    return _images_page(
        request,
        manager,
        _policy_of(manager, rec),
        headers=toast_headers(f"Backup {backup_id} of {vm} deleted"),
    )
