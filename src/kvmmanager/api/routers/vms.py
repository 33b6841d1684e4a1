"""Virtual machines: /api/vms (every host, with the hosts it cannot vouch for) and
/api/hosts/{host}/vms/{vm}.

`{vm}` is the VM's name or UUID. Roles: viewers read (list, show, XML); operators do
everything else, deleting included (with or without its volumes), on VMs they own or that
have no owner (a VM's owner is its creator unless the create names another; admins act
on every VM: see api.deps.check_vm_owner). A create whose
new disks add up to JOB_THRESHOLD_GIB or more (or with `?background=true`) runs as a job
and answers 202 with its id; otherwise 201 with the VM.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Body, Query, status
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter

from kvmmanager.api.deps import CurrentUser, ManagerDep
from kvmmanager.api.schemas.common import ERROR_RESPONSES, JobStarted
from kvmmanager.api.schemas.vms import (
    DiskAttach,
    EditOut,
    HostGapOut,
    MediaInsert,
    NicAttach,
    ShutdownBody,
    VmActionOut,
    VmAddress,
    VmCreate,
    VmCreated,
    VmDeleted,
    VmList,
    VmOut,
    VmPatch,
    VmPatchOut,
    VmXml,
)
from kvmmanager.services.manager import Manager
from kvmmanager.services.users.ownership import check_owner_field
from kvmmanager.services.vms.listing import host_gaps
from kvmmanager.services.vms.spec import DiskSpec, NicSpec, VmSpec

router = APIRouter(tags=["vms"], responses=ERROR_RESPONSES)
VM = "/api/hosts/{host}/vms/{vm}"
# New disks of this total size (GiB) or more are created in a background job.
JOB_THRESHOLD_GIB = 64
Action = Literal["start", "shutdown", "destroy", "reboot", "reset", "suspend", "resume"]


def _created(result: dict[str, Any]) -> dict[str, Any]:
    return {**result, "vm": result["vm"].to_dict()}


# (host, uuid) -> (the DomainInfo serialized, its JSON). DomainInfo is immutable and the
# inventory replaces it on every change, so identity tells whether the bytes are current.
# Profiled (bench/rest_list.py, docs/performance.md): dataclasses.asdict plus the response
# model's validation cost ~0.2 ms per VM, 195 ms for a list of 1,000; cached, ~2 ms.
_json_cache: dict[tuple[str, str], tuple[Any, bytes]] = {}


def _vm_json(manager: Manager, infos: list[Any]) -> bytes:
    parts = []
    for info in infos:
        key = (info.host, info.uuid)
        hit = _json_cache.get(key)
        if hit is None or hit[0] is not info:
            hit = (info, VmOut.model_validate(info.to_dict()).model_dump_json().encode())
            _json_cache[key] = hit
        parts.append(hit[1])
    if len(_json_cache) > len(infos) and len(_json_cache) > 2 * len(manager.inventory.domains()):
        _json_cache.clear()  # removed VMs (or another Manager's, in tests) piled up
    return b"[" + b",".join(parts) + b"]"


def _list_response(manager: Manager, infos: list[Any]) -> Response:
    return Response(_vm_json(manager, infos), media_type="application/json")


@router.get("/api/vms", name="vms.list_all", response_model=VmList)
async def list_all(
    *,
    host: str | None = None,
    state: str | None = None,
    tag: str | None = None,
    q: str | None = Query(None, description="substring of name, title or description; uuid prefix"),
    manager: ManagerDep,
) -> Response:
    """Every VM of every host, from the inventory (no libvirt round trip), and in
    `hosts_not_current` the hosts whose VMs are missing (never listed) or stale."""
    vms = _vm_json(manager, manager.vms.list(host=host, state=state, tag=tag, q=q))
    gaps = [HostGapOut.model_validate(asdict(g)) for g in host_gaps(manager.registry, host)]
    hosts = TypeAdapter(list[HostGapOut]).dump_json(gaps)
    return Response(
        b'{"vms":' + vms + b',"hosts_not_current":' + hosts + b"}",
        media_type="application/json",
    )


@router.get("/api/hosts/{host}/vms", name="vms.list", response_model=list[VmOut])
async def list_host(
    host: str,
    *,
    state: str | None = None,
    tag: str | None = None,
    q: str | None = None,
    manager: ManagerDep,
) -> Response:
    return _list_response(manager, manager.vms.list(host=host, state=state, tag=tag, q=q))


@router.post(
    "/api/hosts/{host}/vms",
    name="vms.create",
    status_code=status.HTTP_201_CREATED,
    response_model=VmCreated,
    responses={202: {"model": JobStarted, "description": "created in a background job"}},
)
async def create(
    host: str,
    body: VmCreate,
    *,
    background: bool = Query(False, description="always run as a job (202 + job id)"),
    manager: ManagerDep,
    user: CurrentUser,
) -> Any:
    """Create (define) a VM; `start: true` boots it too. Anything made before a failure
    (volumes, the definition) is removed again."""
    spec = VmSpec.model_validate(body.model_dump())
    check_owner_field(user, spec.owner)
    if spec.owner is None:
        spec.owner = user.username  # the creator owns what they make, unless told otherwise
    manager.ownership.check_vm_spec_volumes(user, host, spec)
    admin = user.has_role("admin")  # may boot a kernel from any host path
    big = sum(d.size_gib or 0 for d in spec.disks if d.volume is None) >= JOB_THRESHOLD_GIB
    if background or big:
        # Bad input is a 422 now, not a failed job.
        await manager.vms.validate(host, spec, host_paths=admin)

        async def job(progress: Any) -> dict[str, Any]:
            res = await manager.vms.create(
                host, spec, progress, created_by=user.username, host_paths=admin
            )
            return _created(res)

        job_id = manager.jobs.start("vm.create", f"{host}/{spec.name}", job, user, host=host)
        return JSONResponse({"job_id": job_id}, status_code=status.HTTP_202_ACCEPTED)
    return _created(
        await manager.vms.create(host, spec, created_by=user.username, host_paths=admin)
    )


@router.get(VM, name="vms.get", response_model=VmOut)
async def get(host: str, vm: str, manager: ManagerDep) -> dict[str, Any]:
    return manager.vms.get(host, vm).to_dict()


@router.get(VM + "/addresses", name="vms.addresses", response_model=list[VmAddress])
async def addresses(host: str, vm: str, manager: ManagerDep) -> list[dict[str, Any]]:
    """The VM's IP addresses from the best source that answers (our agent, qemu-ga through
    libvirt, or libvirt's DHCP leases), each naming its source."""
    return [a.to_dict() for a in await manager.addresses.of(host, vm)]


@router.get(VM + "/xml", name="vms.xml", response_model=VmXml)
async def xml(
    host: str,
    vm: str,
    *,
    inactive: bool = Query(False, description="the persistent definition, not the live one"),
    manager: ManagerDep,
) -> dict[str, str]:
    """The domain XML (never with the VNC password)."""
    return {"xml": await manager.vms.xml(host, vm, inactive=inactive)}


@router.delete(VM, name="vms.delete", response_model=VmDeleted)
async def delete(
    host: str,
    vm: str,
    *,
    remove_volumes: bool = Query(False, description="also delete its disk volumes"),
    manager: ManagerDep,
) -> dict[str, Any]:
    """Undefine a shut-off VM (409 while it runs), with its NVRAM and TPM state. With
    `remove_volumes`, its disk volumes go too, except CD-ROM media and any volume another
    VM on the host uses: those are listed in `kept_volumes`. The VM's own cloud-init seed
    (`<name>-seed.iso`) is not shared media and goes with its disks."""
    return (await manager.vms.delete(host, vm, remove_volumes=remove_volumes)).to_dict()


@router.post(VM + "/actions/{action}", name="vms.action", response_model=VmActionOut)
async def action(
    host: str,
    vm: str,
    action: Action,
    *,
    body: ShutdownBody | None = Body(None),
    manager: ManagerDep,
) -> dict[str, Any]:
    """start, shutdown (body `mode`: acpi|agent|auto), destroy (force off), reboot, reset,
    suspend, resume. 409 when the VM is in the wrong state for it."""
    mode = body.mode if body is not None else "auto"
    return (await manager.vms.action(host, vm, action, mode=mode)).to_dict()


@router.patch(VM, name="vms.update", response_model=VmPatchOut)
async def update(host: str, vm: str, body: VmPatch, manager: ManagerDep) -> dict[str, Any]:
    """Change what the body names. vCPUs and memory apply live where libvirt allows it
    (up to the VM's maximum, `max_vcpus`/`max_memory_mib`), else at the next boot: `edits`
    says which."""
    svc = manager.vms
    edits: dict[str, Any] = {}
    ref = None
    if body.name is not None:
        ref = await svc.rename(host, vm, body.name)
        vm = ref.uuid
    if body.description is not None:
        ref = await svc.set_description(host, vm, body.description)
    if body.tags is not None:
        ref = await svc.set_tags(host, vm, body.tags)
    if body.autostart is not None:
        ref = await svc.set_autostart(host, vm, body.autostart)
    if body.vcpus is not None or body.max_vcpus is not None:
        edits["vcpus"] = await svc.edit.set_vcpus(host, vm, body.vcpus, body.max_vcpus)
    if body.memory_mib is not None or body.max_memory_mib is not None:
        edits["memory_mib"] = await svc.edit.set_memory(
            host, vm, body.memory_mib, body.max_memory_mib
        )
    if ref is None or edits:
        ref = await svc.describe(host, vm)
    if edits:
        # libvirt sends no event for a vCPU hot-plug or a new maximum: re-read the VM so
        # the next GET shows what it has now.
        await svc.refresh(host, ref.uuid)
    return {"vm": ref.to_dict(), "edits": edits}


@router.post(VM + "/disks", name="vms.attach_disk", response_model=EditOut)
async def attach_disk(
    host: str,
    vm: str,
    body: DiskAttach,
    manager: ManagerDep,
    user: CurrentUser,
) -> dict[str, Any]:
    """A new qcow2 volume (`pool`, `size_gib`) or an existing `volume` (the caller's to
    use); live and persistent when running, persistent when shut off. `details.target`
    is the guest device."""
    manager.ownership.check_volumes(user, host, [(body.pool, body.volume)])
    return await manager.vms.edit.attach_disk(host, vm, DiskSpec.model_validate(body.model_dump()))


@router.delete(VM + "/disks/{target}", name="vms.detach_disk", response_model=EditOut)
async def detach_disk(host: str, vm: str, target: str, manager: ManagerDep) -> dict[str, Any]:
    """Detach the disk (its volume is kept)."""
    return await manager.vms.edit.detach_disk(host, vm, target)


@router.post(VM + "/nics", name="vms.attach_nic", response_model=EditOut)
async def attach_nic(host: str, vm: str, body: NicAttach, manager: ManagerDep) -> dict[str, Any]:
    return await manager.vms.edit.attach_nic(host, vm, NicSpec.model_validate(body.model_dump()))


@router.delete(VM + "/nics/{mac}", name="vms.detach_nic", response_model=EditOut)
async def detach_nic(host: str, vm: str, mac: str, manager: ManagerDep) -> dict[str, Any]:
    return await manager.vms.edit.detach_nic(host, vm, mac)


@router.post(VM + "/media", name="vms.insert_media", response_model=EditOut)
async def insert_media(
    host: str,
    vm: str,
    body: MediaInsert,
    manager: ManagerDep,
    user: CurrentUser,
) -> dict[str, Any]:
    """Put a volume (an ISO, the caller's to use) into the CD-ROM drive, running or not."""
    manager.ownership.check_volumes(user, host, [(body.pool, body.volume)])
    return await manager.vms.edit.insert_media(host, vm, body.pool, body.volume, body.target)


@router.delete(VM + "/media", name="vms.eject_media", response_model=EditOut)
async def eject_media(
    host: str,
    vm: str,
    *,
    target: str | None = None,
    manager: ManagerDep,
) -> Any:
    return await manager.vms.edit.eject_media(host, vm, target)
