"""VM pages: the live list, the detail page with its tabs, and the action buttons.

Actions post to these routes, which call the same VmService methods as the REST API and
answer with the refreshed fragment plus a toast; the event stream keeps other open pages
current.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from kvmmanager.api.deps import CurrentUser, ManagerDep
from kvmmanager.core.errors import HostUnavailable, InvalidInput, KvmmError, NotFound
from kvmmanager.services.manager import Manager
from kvmmanager.services.vms.builder import DiskSpec
from kvmmanager.services.vms.keys import KEY_COMBOS
from kvmmanager.services.vms.pending import PendingChanges, pending_changes
from kvmmanager.services.vms.resources import resource_edit
from kvmmanager.services.vms.service import ACTIONS
from kvmmanager.web.routes import _units
from kvmmanager.web.routes._feedback import failed
from kvmmanager.web.routes._hardware_choices import (
    cd_choices,
    disk_sizes,
    memory_size,
    pools_with_volumes,
)
from kvmmanager.web.routes.create import USER_NET, in_form_words, nic_spec, optional_int
from kvmmanager.web.sparkline import sparkline
from kvmmanager.web.templating import (
    principal,
    redirect_with_toasts,
    render,
    toast_headers,
    vm_gone_tab,
)

router = APIRouter(include_in_schema=False)

STATES = ("running", "paused", "shutoff", "crashed", "pmsuspended", "shutdown")


@dataclass(frozen=True)
class Staleness:
    status: str  # the host's status ("not responding", "reconnecting", ...)
    age: str  # how long ago the inventory last matched libvirt, e.g. "42 s"
    reason: str = ""  # the host's status reason ("libvirtd ... has not answered since ...")


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def staleness(manager: Manager) -> Callable[[str], Staleness | None]:
    """For a VM row: None while its host is connected; else the host's status and the age
    of what the row shows (the inventory stops following a host that does not answer)."""
    now = time.time()

    def of(host: str) -> Staleness | None:
        if host not in manager.registry:
            return None
        hc = manager.registry.get(host)
        if hc.connected or hc.stale_since is None:
            return None
        return Staleness(hc.status, _age(now - hc.stale_since), hc.status_reason)

    return of


def _filtered(
    manager: Manager, host: str | None, state: str | None, tag: str | None, q: str | None
) -> list[Any]:
    vms = manager.vms.list(host=host or None, state=state or None, tag=tag or None, q=q or None)
    return sorted(vms, key=lambda d: (d.host, d.name.lower()))


# Rows per page of the list. The browser renders only these (issue 19: 5,000 rows in one
# table took 51 s to load and seconds of main thread per live swap, bench/browser_list.py);
# filtering runs on the server over the whole inventory.
PAGE_SIZE = 100


@dataclass(frozen=True)
class ListPage:
    number: int  # 1-based
    pages: int
    total: int  # VMs matching the filters
    first: int  # 1-based position of the first row shown (0 when none)
    last: int


def paginate(vms: list[Any], page: str | None) -> tuple[list[Any], ListPage]:
    """The rows of page `page` (clamped: a page past the end after deletions shows the
    last one, a page that is not a number the first)."""
    pages = max(1, -(-len(vms) // PAGE_SIZE))
    try:
        number = int(page or 1)
    except ValueError:
        number = 1
    number = min(max(number, 1), pages)
    start = (number - 1) * PAGE_SIZE
    shown = vms[start : start + PAGE_SIZE]
    first = start + 1 if shown else 0
    return shown, ListPage(number, pages, len(vms), first, start + len(shown))


@router.get("/vms", name="web.vms", response_class=HTMLResponse)
def vm_list(
    request: Request,
    *,
    host: str | None = None,
    state: str | None = None,
    tag: str | None = None,
    q: str | None = None,
    page: str | None = None,
    manager: ManagerDep,
) -> HTMLResponse:
    try:
        vms = _filtered(manager, host, state, tag, q)
    except HostUnavailable:
        vms = []  # that host's VMs are unknown: the banner below says so
    vms, shown = paginate(vms, page)
    # Hosts that stopped answering before their first listing: their VMs are missing from
    # this list, which must say so rather than look complete.
    unlisted = [h for h in manager.registry.all() if h.never_listed]
    context = dict(
        active="vms",
        vms=vms,
        page=shown,
        unlisted=unlisted,
        spark=lambda vm: sparkline(manager, vm),
        stale=staleness(manager),
        hosts=[h.name for h in manager.registry.all()],
        states=STATES,
        tags=sorted({t for d in manager.inventory.domains() for t in d.tags}),
        filters={"host": host or "", "state": state or "", "tag": tag or "", "q": q or ""},
    )
    if request.headers.get("hx-request") and request.headers.get("hx-target") == "vm-rows":
        return render(request, "vms/_rows.html", **context)
    return render(request, "vms/list.html", **context)


@router.get("/vms/{host}/{vm}/row", name="web.vm_row", response_class=HTMLResponse)
def vm_row(request: Request, host: str, vm: str, manager: ManagerDep) -> Response:
    try:
        info = manager.vms.get(host, vm)
    except KvmmError:
        return Response("", status_code=200)  # removed: the row disappears
    return render(
        request,
        "vms/_row.html",
        vm=info,
        spark=lambda vm: sparkline(manager, vm),
        stale=staleness(manager),
    )


@router.get("/vms/{host}/{vm}/addresses", name="web.vm_addresses", response_class=HTMLResponse)
async def vm_addresses(request: Request, host: str, vm: str, manager: ManagerDep) -> HTMLResponse:
    try:
        found = await manager.addresses.of(host, vm)
    except KvmmError:
        found = []
    return render(request, "vms/_addresses.html", addresses=found)


# How long a VM may keep running after a shutdown request before the page says that the
# guest did not react (a guest OS that handles ACPI stops well within it).
SHUTDOWN_GRACE_SECONDS = 60


@router.get("/vms/{host}/{vm}", name="web.vm_detail", response_class=HTMLResponse)
async def vm_detail(request: Request, host: str, vm: str, manager: ManagerDep) -> HTMLResponse:
    info = manager.vms.get(host, vm)
    return render(
        request,
        "vms/detail.html",
        active="vms",
        vm=info,
        pools=await pools_with_volumes(manager, host, principal(request)),
        key_combos=list(KEY_COMBOS),
        pending=await _pending(manager, host, vm),
        stale=staleness(manager),
        shutdown_grace=SHUTDOWN_GRACE_SECONDS,
    )


@router.get("/vms/{host}/{vm}/overview", name="web.vm_overview", response_class=HTMLResponse)
async def vm_overview(request: Request, host: str, vm: str, manager: ManagerDep) -> HTMLResponse:
    try:
        info = manager.vms.get(host, vm)
    except NotFound:
        # Deleted meanwhile (the live refresh after domain.removed): say so, with no
        # buttons left that would act on a VM that is gone.
        return render(request, "vms/_gone.html", host=host)
    return render(
        request,
        "vms/_overview.html",
        vm=info,
        pending=await _pending(manager, host, vm),
        stale=staleness(manager),
    )


# The buttons' own words, for a failure's toast.
ACTION_LABELS = {
    "start": "Start", "shutdown": "Shut down", "reboot": "Reboot", "suspend": "Pause",
    "resume": "Resume", "destroy": "Force off", "reset": "Reset",
}  # fmt: skip


@router.post("/vms/{host}/{vm}/actions/{action}", name="web.vm_action", response_class=HTMLResponse)
async def vm_action(
    request: Request,
    host: str,
    vm: str,
    action: str,
    *,
    mode: Annotated[str, Form()] = "auto",
    manager: ManagerDep,
) -> Response:
    if action not in ACTIONS:
        return Response(
            status_code=422, headers=toast_headers(f"unknown action {action!r}", "error")
        )
    try:
        result = await manager.vms.action(host, vm, action, mode)
    except KvmmError as e:
        raise failed(ACTION_LABELS.get(action, action.capitalize()), e) from e
    message = result.message or f"{action}: {result.name} is {result.state}"
    if action == "destroy":
        message = f"Forced off {result.name}"
    # Render what libvirt says now, not an inventory its event may not have reached yet.
    info = await manager.vms.refresh(host, result.uuid)
    return render(
        request,
        "vms/_overview.html",
        headers=toast_headers(message),
        vm=info,
        pending=await _pending(manager, host, result.uuid),
    )


@router.post("/vms/{host}/{vm}/delete", name="web.vm_delete")
async def vm_delete(
    host: str,
    vm: str,
    *,
    remove_volumes: Annotated[bool, Form()] = False,
    manager: ManagerDep,
) -> Response:
    result = await manager.vms.delete(host, vm, remove_volumes=remove_volumes)
    removed = result.deleted_volumes
    # The page posts to the VM's UUID address: the toast names the VM the user knows.
    message = f"Deleted {result.name}" + (f" and {len(removed)} volume(s)" if removed else "")
    if result.kept_volumes:
        message += f"; kept {len(result.kept_volumes)} volume(s) another VM uses or no pool holds"
    return redirect_with_toasts("/vms", (message, "ok"))


@router.get("/vms/{host}/{vm}/hardware", name="web.vm_hardware", response_class=HTMLResponse)
async def vm_hardware(request: Request, host: str, vm: str, manager: ManagerDep) -> HTMLResponse:
    try:
        info = manager.vms.get(host, vm)
    except NotFound:
        return vm_gone_tab(request, host)
    pools = await pools_with_volumes(manager, host, principal(request))
    networks = await _networks(manager, host)
    return render(
        request,
        "vms/_hardware.html",
        vm=info,
        pools=pools,
        cd=cd_choices(info, pools),
        disk_sizes=disk_sizes(info, pools),
        memory_size=memory_size,
        networks=networks,
        pending=await _pending(manager, host, vm),
    )


@router.post("/vms/{host}/{vm}/resources", name="web.vm_resources", response_class=HTMLResponse)
async def vm_resources(
    request: Request,
    host: str,
    vm: str,
    vcpus: Annotated[int, Form()],
    memory_mib: Annotated[str, Form()],
    *,
    memory_unit: Annotated[str, Form()] = "MiB",
    max_vcpus: Annotated[str, Form()] = "",
    max_memory_mib: Annotated[str, Form()] = "",
    max_memory_unit: Annotated[str, Form()] = "MiB",
    manager: ManagerDep,
) -> HTMLResponse:
    info = manager.vms.get(host, vm)
    try:
        max_cpu = optional_int(max_vcpus, "max_vcpus")
        # Sizes come in the unit chosen beside them (MiB or GiB), as in the create form.
        max_mem = _units.optional_memory_mib(
            max_memory_mib, max_memory_unit, "max_memory_mib", "Maximum memory"
        )
        memory = _units.memory_mib(memory_mib, memory_unit)
        edit = resource_edit(info, vcpus, memory, max_cpu, max_mem)
        messages = await manager.vms.edit.set_resources(host, vm, edit)
    except InvalidInput as exc:
        # The form's labels, not the API's field names.
        raise InvalidInput(in_form_words(exc.message), field=exc.field) from exc
    return await _hardware_response(
        request, manager, host, vm, "; ".join(messages) or "Nothing changed"
    )


@router.post("/vms/{host}/{vm}/media", name="web.vm_media_insert", response_class=HTMLResponse)
async def vm_media_insert(
    request: Request,
    host: str,
    vm: str,
    volume: Annotated[str, Form()],
    *,
    target: Annotated[str | None, Form()] = None,
    manager: ManagerDep,
    user: CurrentUser,
) -> HTMLResponse:
    pool, _, vol = volume.partition("/")
    try:
        manager.ownership.check_volumes(user, host, [(pool, vol)])
        result = await manager.vms.edit.insert_media(host, vm, pool, vol, target)
    except KvmmError as e:
        raise failed("Insert CD", e, MEDIA_LABELS) from e
    drive = result.get("details", {}).get("target") or target
    return await _hardware_response(
        request, manager, host, vm, f"Inserted {vol} into {drive}: {_how(result)}"
    )


@router.post("/vms/{host}/{vm}/media/eject", name="web.vm_media_eject", response_class=HTMLResponse)
async def vm_media_eject(
    request: Request,
    host: str,
    vm: str,
    *,
    target: Annotated[str | None, Form()] = None,
    manager: ManagerDep,
) -> HTMLResponse:
    try:
        result = await manager.vms.edit.eject_media(host, vm, target)
    except KvmmError as e:
        raise failed("Eject CD", e, MEDIA_LABELS) from e
    drive = result.get("details", {}).get("target") or target
    return await _hardware_response(
        request, manager, host, vm, f"Ejected the CD from {drive}: {_how(result)}"
    )


# The forms' labels for the service's field names that its messages use.
MEDIA_LABELS = {"volume": "ISO volume"}
DISK_LABELS = {"size_gib": "New disk size (GiB)"}


def _how(result: dict[str, Any]) -> str:
    """The edit service's account of when a change applies ("applied now and kept",
    "saved; the VM is shut off", "takes effect at the next boot")."""
    message = str(result.get("message") or "done")
    return message.rsplit("): ", 1)[-1]


async def _hardware_response(
    request: Request, manager: Manager, host: str, vm: str, message: str
) -> HTMLResponse:
    info = await manager.vms.refresh(host, manager.vms.get(host, vm).uuid)
    pools = await pools_with_volumes(manager, host, principal(request))
    return render(
        request,
        "vms/_hardware.html",
        headers=toast_headers(message),
        vm=info,
        pools=pools,
        cd=cd_choices(info, pools),
        disk_sizes=disk_sizes(info, pools),
        memory_size=memory_size,
        networks=await _networks(manager, host),
        pending=await _pending(manager, host, vm),
    )


async def _pending(manager: Manager, host: str, vm: str) -> PendingChanges:
    try:
        return await pending_changes(manager.vms, host, vm)
    except KvmmError:
        return PendingChanges()  # the page still shows the live values


async def _networks(manager: Manager, host: str) -> list[str]:
    try:
        return [n.name for n in await manager.networks.list(host)]
    except KvmmError:
        return []


@router.post("/vms/{host}/{vm}/disks", name="web.vm_disk_attach", response_class=HTMLResponse)
async def vm_disk_attach(
    request: Request,
    host: str,
    vm: str,
    pool: Annotated[str, Form()],
    *,
    size_gib: Annotated[float, Form()] = 0,
    disk_unit: Annotated[str, Form()] = "GiB",
    volume: Annotated[str, Form()] = "",
    manager: ManagerDep,
    user: CurrentUser,
) -> HTMLResponse:
    size_gib *= _units.DISK_UNITS.get(disk_unit, 1.0)  # in the unit beside the field
    try:
        if volume:  # an existing volume is chosen as "pool/volume"
            pool, _, volume = volume.partition("/")
            manager.ownership.check_volumes(user, host, [(pool, volume)])
        elif size_gib <= 0:
            raise InvalidInput(
                "give a New disk size (GiB) above 0, or choose an Existing volume",
                field="size_gib",
            )
        spec = DiskSpec(pool=pool, size_gib=size_gib or None, volume=volume or None)
        result = await manager.vms.edit.attach_disk(host, vm, spec)
    except KvmmError as e:
        raise failed("Attach disk", e, DISK_LABELS) from e
    details = result.get("details", {})
    what = f"disk {details.get('target')} ({str(details.get('path', '')).rsplit('/', 1)[-1]})"
    return await _hardware_response(request, manager, host, vm, f"Attached {what}: {_how(result)}")


@router.post(
    "/vms/{host}/{vm}/disks/{target}/detach", name="web.vm_disk_detach", response_class=HTMLResponse
)
async def vm_disk_detach(
    request: Request, host: str, vm: str, target: str, manager: ManagerDep
) -> HTMLResponse:
    result = await manager.vms.edit.detach_disk(host, vm, target)
    return await _hardware_response(request, manager, host, vm, result["message"])


@router.post("/vms/{host}/{vm}/nics", name="web.vm_nic_attach", response_class=HTMLResponse)
async def vm_nic_attach(
    request: Request,
    host: str,
    vm: str,
    network: Annotated[str, Form()],
    manager: ManagerDep,
) -> HTMLResponse:
    try:
        result = await manager.vms.edit.attach_nic(host, vm, nic_spec(network))
    except KvmmError as e:
        raise failed("Add NIC", e) from e
    details = result.get("details", {})
    mac, source = details.get("mac", ""), details.get("source", network)
    where = f"on network {network}" if network != USER_NET else f"with {source} networking"
    message = f"Added a NIC {where} ({mac}): {_how(result)}"
    return await _hardware_response(request, manager, host, vm, message)


@router.post(
    "/vms/{host}/{vm}/nics/{mac}/detach", name="web.vm_nic_detach", response_class=HTMLResponse
)
async def vm_nic_detach(
    request: Request, host: str, vm: str, mac: str, manager: ManagerDep
) -> HTMLResponse:
    result = await manager.vms.edit.detach_nic(host, vm, mac)
    return await _hardware_response(request, manager, host, vm, result["message"])
