"""Volumes of a pool: /api/hosts/{host}/pools/{pool}/volumes.

Viewers list and read volumes' details; operators create, delete, resize, clone, upload
and download, each only volumes that are theirs or shared (the ownership rule on
`{vol}`, api/deps.check_path_owners; where a volume's owners live: services/users/ownership.py).

Upload (`PUT .../{vol}/content`) is synchronous: the request body streams through
libvirt into the volume while it arrives, never buffered whole, and the response comes
once the data is in. It still runs as a job (kind `volume.upload`), so its progress
is published as `job.progress` events and another client may cancel it with
`POST /api/jobs/{id}/cancel`; a cancelled, failed or disconnected upload into a volume it
created deletes that volume. `?create=true&format=raw|iso|qcow2` creates the volume sized
to the body (Content-Length, or `?size=` for a chunked body); without `create` the body
overwrites the existing volume from its start.

Clone (`POST .../{vol}/clone`) answers 202 with a job id at once.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from kvmmanager.api.deps import (
    CurrentUser,
    ManagerDep,
    OperatorUser,
    no_content,
    owner_read,
    streaming_body,
)
from kvmmanager.api.schemas.common import ERROR_RESPONSES, JobStarted
from kvmmanager.api.schemas.storage import (
    UploadResult,
    VolumeClone,
    VolumeCreate,
    VolumeOut,
    VolumeResize,
)
from kvmmanager.core import errors
from kvmmanager.core.errors import Cancelled, InvalidInput, KvmmError
from kvmmanager.services.jobs.service import JobProgress
from kvmmanager.services.storage.specs import VolumeSpec

router = APIRouter(
    prefix="/api/hosts/{host}/pools/{pool}/volumes", tags=["volumes"], responses=ERROR_RESPONSES
)


@router.get("", name="volumes.list", response_model=list[VolumeOut])
async def list_volumes(host: str, pool: str, manager: ManagerDep) -> list:
    return [v.to_dict() for v in await manager.storage.list_volumes(host, pool)]


@router.post(
    "", name="volumes.create", response_model=VolumeOut, status_code=status.HTTP_201_CREATED
)
async def create_volume(
    host: str,
    pool: str,
    body: VolumeCreate,
    manager: ManagerDep,
    user: CurrentUser,
) -> dict:
    spec = VolumeSpec.model_validate(body.model_dump())
    if spec.backing is not None:
        # An overlay reads its backing volume: that one must be the caller's to read.
        manager.ownership.check_volumes(
            user, host, [(spec.backing.pool or pool, spec.backing.volume)]
        )
    details = await manager.storage.create_volume(host, pool, spec)
    manager.ownership.record_new_volume(user, host, pool, details.name)
    return details.to_dict()


@router.get("/{vol}", name="volumes.get", response_model=VolumeOut)
async def get_volume(host: str, pool: str, vol: str, manager: ManagerDep) -> dict:
    return (await manager.storage.get_volume(host, pool, vol)).to_dict()


@router.delete("/{vol}", name="volumes.delete", status_code=status.HTTP_204_NO_CONTENT)
async def delete_volume(host: str, pool: str, vol: str, manager: ManagerDep) -> Response:
    """409 naming the VMs when a VM uses the volume."""
    await manager.storage.delete_volume(host, pool, vol)
    return no_content()


@router.post("/{vol}/resize", name="volumes.resize", response_model=VolumeOut)
async def resize_volume(
    host: str, pool: str, vol: str, body: VolumeResize, manager: ManagerDep
) -> dict:
    result = await manager.storage.resize_volume(host, pool, vol, body.capacity, shrink=body.shrink)
    return result.to_dict()


@router.post(
    "/{vol}/clone",
    name="volumes.clone",
    response_model=JobStarted,
    status_code=status.HTTP_202_ACCEPTED,
)
async def clone_volume(
    host: str,
    pool: str,
    vol: str,
    body: VolumeClone,
    manager: ManagerDep,
    user: CurrentUser,
) -> dict:
    job_id = await manager.storage.clone_volume(
        host, pool, vol, body.name, target_pool=body.target_pool, format=body.format, user=user
    )
    return {"job_id": job_id}


def _declared_size(request: Request, size: int | None) -> int:
    if size is not None:
        return size
    length = request.headers.get("content-length")
    if length is None:
        raise InvalidInput(
            "send a Content-Length header, or ?size= for a chunked body", field="size"
        )
    try:
        return int(length)
    except ValueError:
        raise InvalidInput("Content-Length must be an integer", field="Content-Length") from None


_ERRORS_BY_CODE: dict[str, type[KvmmError]] = {
    cls.code: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, KvmmError)
}


def _job_error(error: dict[str, Any] | None) -> KvmmError:
    error = error or {}
    cls = _ERRORS_BY_CODE.get(str(error.get("code")), KvmmError)
    return cls(
        str(error.get("message") or "the upload failed"),
        field=error.get("field"),
        details=error.get("details"),
    )


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.put(
    "/{vol}/content",
    name="volumes.upload",
    response_model=UploadResult,
    openapi_extra=_UPLOAD_BODY,
)
@streaming_body
async def upload_volume(
    host: str,
    pool: str,
    vol: str,
    request: Request,
    *,
    create: bool = False,
    format: Literal["raw", "iso", "qcow2"] = "raw",
    size: int | None = Query(default=None, ge=1, description="byte count of a chunked body"),
    manager: ManagerDep,
    user: CurrentUser,
) -> dict:
    """Stream the request body into the volume through libvirt (never buffered whole).

    Synchronous: answers once the data is in. It runs as a `volume.upload` job, so
    `job.progress` events report it and `POST /api/jobs/{id}/cancel` stops it. With
    `create=true` a new volume sized to the body is made (409 if it exists) and is
    deleted again if the upload fails, is cancelled or the client goes away. Without
    `create` the body overwrites the existing volume from its start (refused while a
    running VM uses it). Either way the data is then probed through libvirt: an image
    naming a backing file or an external data file, or not of the declared `format`
    (raw and iso: plain bytes; qcow2: a qcow2 image), is refused (422, field `format`)
    and the volume deleted, the overwritten one too. The byte count comes from
    Content-Length, or `?size=` for a chunked body; a body shorter or longer than that
    fails with 422.
    """
    declared = _declared_size(request, size)
    storage = manager.storage
    # Fail fast (404/409/422) before a job row exists for a request that cannot work.
    await storage.check_upload(host, pool, vol, size=declared, create=create, format=format)

    async def body() -> Any:
        try:
            async for chunk in request.stream():
                yield chunk
        except ClientDisconnect:
            raise Cancelled("the client went away during the upload") from None

    async def run(progress: JobProgress) -> dict[str, Any]:
        if create:
            # Should the server die mid-upload, the next start deletes the new volume.
            progress.undo_on_interrupt("delete_volume", host=host, pool=pool, volume=vol)
        details = await storage.upload_volume(
            host,
            pool,
            vol,
            body(),
            size=declared,
            create=create,
            format=format,
            progress=lambda done, total: progress(done, total, "uploading"),
            cancelled=progress.cancelled,
        )
        if create:
            manager.ownership.record_new_volume(user, host, pool, vol)
        return {"bytes": declared, "volume": details.to_dict()}

    job_id = manager.jobs.start("volume.upload", f"{host}/{pool}/{vol}", run, user, host=host)
    job = await manager.jobs.wait(job_id)
    if job.state != "done":
        raise _job_error(job.error)
    return {"job_id": job_id, **(job.result or {})}


@router.get(
    "/{vol}/content",
    name="volumes.download",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
@owner_read
async def download_volume(
    host: str,
    pool: str,
    vol: str,
    manager: ManagerDep,
    _user: OperatorUser,
) -> StreamingResponse:
    """The volume's bytes as stored (a qcow2 volume comes as its qcow2 file). Operators
    only, and only the volume's owners' (services/users/ownership.py): a disk image holds
    everything inside its guest."""
    _details, download = await manager.storage.open_download(host, pool, vol)
    return StreamingResponse(
        download.chunks(),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(download.size),
            "Content-Disposition": f'attachment; filename="{vol}"',
        },
    )
