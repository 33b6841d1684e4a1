"""Export and import page (operators): a VM's libvirt XML as a download, a VM bundle
(XML + disks) exported as a job with its progress then downloaded, a bare XML imported
from a form, and a bundle uploaded with progress (app.js, data-upload-post) then
imported as a job. The work is the export service's, as for the REST API."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from kvmmanager.api.deps import (
    CurrentUser,
    ManagerDep,
    OperatorUser,
)
from kvmmanager.core.errors import Conflict, InvalidInput, KvmmError, NotFound
from kvmmanager.services.manager import Manager
from kvmmanager.services.portability.import_plan import ImportOptions
from kvmmanager.web.routes._forms import host_choices, vm_choices
from kvmmanager.web.templating import redirect_with_toasts, render, toast_headers

router = APIRouter(include_in_schema=False)
MAX_XML = 1024 * 1024


def _vm(value: str) -> tuple[str, str]:
    host, sep, vm = value.partition("/")
    if not sep or not host or not vm:
        raise InvalidInput("pick a VM from the list", field="vm")
    return host, vm


async def _pools(manager: Manager) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for host in host_choices(manager):
        try:
            out[host] = [p.name for p in await manager.storage.list_pools(host) if p.active]
        except KvmmError:
            out[host] = []
    return out


async def _page(
    request: Request,
    manager: Manager,
    *,
    form: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    template: str = "ops/transfer.html",
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        template,
        status_code=status_code,
        active="vms",
        vm_choices=vm_choices(manager),
        hosts=host_choices(manager),
        pools=await _pools(manager),
        form=form or {},
        errors=errors or {},
    )


@router.get("/transfer", name="web.transfer", response_class=HTMLResponse)
async def transfer_page(request: Request, manager: ManagerDep, _op: OperatorUser) -> HTMLResponse:
    return await _page(request, manager)


@router.get("/transfer/xml", name="web.transfer_xml")
async def download_xml(vm: str, manager: ManagerDep, _op: OperatorUser) -> Response:
    host, name = _vm(vm)
    xml = await manager.export.export_xml(host, name)
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", manager.vms.get(host, name).name) + ".xml"
    return Response(
        xml,
        media_type="application/xml",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _job_view(manager: Manager, job_id: str) -> dict[str, Any]:
    job = manager.jobs.get(job_id)
    total = job.progress_total or 0
    return {
        "id": job.id,
        "kind": job.kind,
        "target": job.target,
        "state": job.state,
        "message": job.message,
        "done": job.progress_done or 0,
        "total": total,
        "pct": int(100 * (job.progress_done or 0) / total) if total else 0,
        "result": job.result or {},
        "error": job.error or {},
        "final": job.state in ("done", "failed", "cancelled"),
    }


@router.post("/transfer/export", name="web.transfer_export", response_class=HTMLResponse)
async def export_bundle(
    request: Request,
    *,
    vm: Annotated[str, Form()] = "",
    manager: ManagerDep,
    user: CurrentUser,
) -> HTMLResponse:
    host, name = _vm(vm)
    manager.vms.get(host, name)  # 404 now, not a failed job
    # The VM is named in the form, not the path: its owner's (and admins') to export.
    manager.ownership.check_vm(user, host, name)

    async def job(progress: Any) -> dict[str, Any]:
        return await manager.export.export_bundle(host, name, progress, owner=user.username)

    job_id = manager.jobs.start("vm.export", f"{host}/{name}", job, user, host=host)
    return render(request, "ops/_transfer_job.html", job=_job_view(manager, job_id))


@router.get("/transfer/jobs/{job_id}", name="web.transfer_job", response_class=HTMLResponse)
def transfer_job(
    request: Request,
    job_id: str,
    manager: ManagerDep,
    _op: OperatorUser,
) -> HTMLResponse:
    view = _job_view(manager, job_id)
    if view["kind"] not in ("vm.export", "vm.import"):
        raise NotFound(f"no export or import job {job_id}", field="job_id")
    return render(request, "ops/_transfer_job.html", job=view)


@router.post("/transfer/bundles/{bundle_id}/delete", name="web.transfer_bundle_delete")
def delete_bundle(bundle_id: str, manager: ManagerDep) -> Response:
    manager.export.bundle_path(bundle_id)  # NotFound / InvalidInput for a bad id
    manager.export.delete_bundle(bundle_id)
    return Response(
        "<p class='muted'>Bundle removed from the server.</p>",
        headers=toast_headers("Bundle removed"),
    )


@router.post("/transfer/import-xml", name="web.transfer_import_xml", response_class=HTMLResponse)
async def import_xml(
    request: Request,
    *,
    host: Annotated[str, Form()] = "",
    xml: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    new_identity: Annotated[bool, Form()] = False,
    manager: ManagerDep,
    user: CurrentUser,
) -> Response:
    form = {"host": host, "xml": xml, "name": name, "new_identity": new_identity}
    try:
        if not xml.strip():
            raise InvalidInput("paste a libvirt domain XML", field="xml")
        if len(xml) > MAX_XML:
            raise InvalidInput("the XML is larger than 1 MiB", field="xml")
        if host not in host_choices(manager):
            raise InvalidInput("pick a host", field="host")
        opts = ImportOptions(
            name=name.strip() or None,
            new_identity=new_identity,
            owner=user.username,
            trusted=user.has_role("admin"),
            principal=user,
        )
        result = await manager.export.import_xml(host, xml, opts)
    except (InvalidInput, Conflict, NotFound) as exc:
        # NotFound names the network or volume the XML refers to that this host lacks.
        return await _page(
            request,
            manager,
            form=form,
            errors={exc.field or "xml": exc.message},
            template="ops/_import_xml_form.html",
            status_code=422,
        )
    new = result["vm"]["name"]
    renamed = f" (renamed from {result['renamed_from']})" if result.get("renamed_from") else ""
    return redirect_with_toasts(
        f"/vms/{quote(host)}/{quote(new)}", (f"Imported {new}{renamed}", "ok")
    )
