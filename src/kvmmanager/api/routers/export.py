"""VM export and import as libvirt domain XML.

GET  /api/hosts/{host}/vms/{vm}/export   the persistent domain XML (viewers may read it,
                                         as they may read /xml; it never holds secrets)
POST /api/hosts/{host}/imports           define a VM from such an XML: renamed on a name
                                         clash, new UUID on a UUID clash or on request,
                                         networks and pools remapped

Bundles (XML + disk volumes, see services/portability/bundle.py), operators only since they
carry whole disks, and each only to the user who exported it and admins (the ownership
rule, checked app-wide on `{bundle_id}`: api/deps.check_path_owners):

POST   /api/hosts/{host}/vms/{vm}/export/bundle   job (202) writing the bundle; its result
                                                   has the bundle id
GET    /api/exports/{bundle_id}                    download it (application/gzip)
DELETE /api/exports/{bundle_id}                    remove it from the manager
POST   /api/hosts/{host}/imports/bundle?pool=...   upload a bundle (the body); a job (202)
                                                   imports it into that pool
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import FileResponse, JSONResponse
from starlette.requests import ClientDisconnect

from kvmmanager.api.deps import CurrentUser, ManagerDep, OperatorUser, no_content, streaming_body
from kvmmanager.api.schemas.common import ERROR_RESPONSES, JobStarted
from kvmmanager.api.schemas.export import ExportedXml, ImportedVm, ImportXmlIn
from kvmmanager.core.errors import Cancelled, InvalidInput
from kvmmanager.services.portability.import_plan import ImportOptions

router = APIRouter(tags=["export"], responses=ERROR_RESPONSES)


@router.get("/api/hosts/{host}/vms/{vm}/export", name="export.xml", response_model=ExportedXml)
async def export_xml(host: str, vm: str, manager: ManagerDep) -> Any:
    return {"xml": await manager.export.export_xml(host, vm)}


@router.post(
    "/api/hosts/{host}/imports",
    name="export.import_xml",
    status_code=status.HTTP_201_CREATED,
    response_model=ImportedVm,
)
async def import_xml(
    host: str,
    body: ImportXmlIn,
    manager: ManagerDep,
    user: CurrentUser,
) -> Any:
    """Define (not start) a VM from a libvirt domain XML. Every network and volume it
    refers to must exist on this host (after remapping): 404 naming `network_map` or
    `pool_map` otherwise. The importer owns the VM. Only admins may import what the
    manager's builders do not make (host files or devices, `<filesystem>`, `qemu:`
    elements...): 422 naming the element otherwise."""
    opts = ImportOptions(
        name=body.name,
        new_identity=body.new_identity,
        network_map=body.network_map,
        pool_map=body.pool_map,
        owner=user.username,
        trusted=user.has_role("admin"),
        principal=user,
    )
    return await manager.export.import_xml(host, body.xml, opts)


def _mapping(items: list[str], field: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise InvalidInput(f"{field} entries must look like OLD=NEW", field=field)
        out[old] = new
    return out


@router.post(
    "/api/hosts/{host}/vms/{vm}/export/bundle",
    name="export.bundle",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobStarted,
)
async def export_bundle(
    host: str,
    vm: str,
    manager: ManagerDep,
    user: CurrentUser,
) -> Any:
    """Start a job writing the (shut-off) VM's bundle; its result holds `bundle_id`."""
    manager.vms.get(host, vm)  # 404 now, not a failed job
    # A host not answering (503) or a running VM (409): refused now, not a failed job.
    await manager.export.check_exportable(host, vm)

    async def job(progress: Any) -> dict[str, Any]:
        return await manager.export.export_bundle(host, vm, progress, owner=user.username)

    return {"job_id": manager.jobs.start("vm.export", f"{host}/{vm}", job, user, host=host)}


@router.get(
    "/api/exports/{bundle_id}",
    name="export.download",
    response_class=FileResponse,
    responses={200: {"content": {"application/gzip": {}}}},
)
async def download_bundle(
    bundle_id: str,
    manager: ManagerDep,
    _op: OperatorUser,
) -> FileResponse:
    path = manager.export.bundle_path(bundle_id)
    return FileResponse(path, media_type="application/gzip", filename=f"{bundle_id}.tar.gz")


@router.delete(
    "/api/exports/{bundle_id}", name="export.delete_bundle", status_code=status.HTTP_204_NO_CONTENT
)
async def delete_bundle(bundle_id: str, manager: ManagerDep) -> Response:
    manager.export.delete_bundle(bundle_id)
    return no_content()


@router.post(
    "/api/hosts/{host}/imports/bundle",
    name="export.import_bundle",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobStarted,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
@streaming_body
async def import_bundle(
    host: str,
    request: Request,
    *,
    pool: str = Query(..., max_length=256, description="pool for the disk volumes"),
    name: str | None = Query(None, max_length=256),
    new_identity: bool = False,
    network: list[str] = Query([], description="remap OLD=NEW (repeat)"),
    manager: ManagerDep,
    user: CurrentUser,
) -> Any:
    """Receive a bundle (the request body), then import it in a job: its disks become new
    volumes in `pool`, checked against the manifest's sha256 before the VM is defined."""
    opts = ImportOptions(
        name=name,
        new_identity=new_identity,
        network_map=_mapping(network, "network"),
        owner=user.username,
        trusted=user.has_role("admin"),
        principal=user,
    )
    await manager.storage.get_pool(host, pool)  # 404 before receiving any byte

    async def body() -> Any:
        try:
            async for chunk in request.stream():
                yield chunk
        except ClientDisconnect:
            raise Cancelled("the client went away during the upload") from None

    path = await manager.export.receive_bundle(body())
    try:
        # A file that is not a bundle is a 422 now, not a failed job.
        await manager.export.check_bundle(path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise

    async def job(progress: Any) -> dict[str, Any]:
        try:
            return await manager.export.import_bundle(host, path, pool, opts, progress)
        finally:
            path.unlink(missing_ok=True)

    job_id = manager.jobs.start("vm.import", f"{host}/{pool}", job, user, host=host)
    return JSONResponse({"job_id": job_id}, status_code=status.HTTP_202_ACCEPTED)
