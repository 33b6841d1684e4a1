"""The create-VM wizard: one form, validated by the VM service, errors shown inline."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from kvmmanager.api.deps import ManagerDep, OperatorUser
from kvmmanager.core.errors import InvalidInput, KvmmError
from kvmmanager.services.cloudinit.seed import AgentPolicy, CloudInitSpec, CloudUser
from kvmmanager.services.manager import Manager
from kvmmanager.services.users.service import Principal
from kvmmanager.services.vms import osinfo
from kvmmanager.services.vms.builder import DiskSpec, InstallSource, NicSpec, VmSpec
from kvmmanager.web.routes import _feedback
from kvmmanager.web.routes import _units as units
from kvmmanager.web.routes._disk_choices import disk_choices
from kvmmanager.web.templating import audit_target, principal, redirect_with_toasts, render

router = APIRouter(include_in_schema=False)

# Inputs of the form that show their own error (vms/_new_form.html's err() calls).
FORM_FIELDS = frozenset(
    {"name", "os", "source", "vcpus", "memory_mib", "disk_gib", "network", "firmware"}
    | {"description", "max_vcpus", "max_memory_mib"}
    | {"tags", "ci_hostname", "ci_user", "ci_ssh_keys", "ci_password", "ci_packages"}
    | {"ag_read", "ag_write", "ag_exec", "disk_bus", "nic_model"}
)
# The service's field names, as the form labels them (messages say "size_gib must...").
LABELS = {
    "memory_mib": "Memory (MiB)",
    "max_memory_mib": "Maximum memory (MiB)",
    "size_gib": "New disk (GiB)",
    "vcpus": "vCPUs",
    "max_vcpus": "Maximum vCPUs",
    "cmdline": "Kernel command line",
}


def in_form_words(message: str) -> str:
    """The service's `field=value` and field names said with this form's labels."""
    return _feedback.in_form_words(message, LABELS)


# The network select's value for a user-mode NIC: ':' is in no libvirt network's name.
USER_NET = ":user"


def nic_spec(choice: str, model: str = "virtio") -> NicSpec:
    """The NIC a network select chose: a libvirt network, or user-mode networking."""
    if choice == USER_NET:
        return NicSpec(user=True, model=model)
    return NicSpec(network=choice, model=model)


def optional_int(text: str, field: str) -> int | None:
    """An optional number input: empty means not given."""
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(f"{LABELS.get(field, field)}: not a whole number", field=field) from None


async def _choices(manager: Manager, host: str, user: Principal | None) -> dict[str, Any]:
    """What the form offers on `host`: pools with their volumes (the ISOs; the disks as
    `user` may use them), networks, firmware."""
    out: dict[str, Any] = {"pools": [], "networks": [], "uefi": False, "tpm": False}
    try:
        for pool in await manager.storage.list_pools(host):
            if pool.active:
                vols = await manager.storage.list_volumes(host, pool.name)
                volumes = [v.name for v in vols]
                # Free space: shown beside the pool, and the form warns of a larger disk.
                out["pools"].append(
                    {
                        "name": pool.name,
                        "volumes": volumes,
                        "disks": disk_choices(manager, host, user, pool.name, vols),
                        "available": pool.available,
                    }
                )
        out["networks"] = [n.name for n in await manager.networks.list(host) if n.active]
        caps = await manager.hosts.domain_capabilities(host)
        out["uefi"] = caps["firmware"]["uefi"]
        out["tpm"] = caps["tpm"]["supported"]
    except KvmmError as e:
        out["error"] = e.message
    return out


@router.get("/vms/new", name="web.vm_new", response_class=HTMLResponse)
async def new_vm(
    request: Request,
    *,
    host: str | None = None,
    manager: ManagerDep,
    _user: OperatorUser,
) -> HTMLResponse:
    hosts = [h.name for h in manager.registry.all()]
    host = host or (hosts[0] if hosts else "")
    return render(
        request,
        "vms/new.html",
        active="vms",
        hosts=hosts,
        host=host,
        form={
            "vcpus": 1,
            "memory_mib": 1024,
            "disk_gib": 10,
            "install_agent": True,
            "cloud_seed": True,
        },
        errors={},
        **(await _choices(manager, host, principal(request)) if host else {}),
    )


@router.get("/vms/new/isos", name="web.vm_new_isos", response_class=HTMLResponse)
async def new_vm_isos(
    request: Request,
    host: str,
    *,
    iso: str = "",
    manager: ManagerDep,
    _user: OperatorUser,
) -> HTMLResponse:
    """The ISO options of the form, again: after an upload the new ISO is offered (and
    picked, as the newest one named by the upload)."""
    choices = await _choices(manager, host, principal(request))
    return render(request, "vms/_iso_options.html", pools=choices["pools"], form={"iso": iso})


def _volume(value: str) -> tuple[str | None, str | None]:
    pool, _, vol = value.partition("/")
    return (pool or None, vol or None)


@router.post("/vms/new", name="web.vm_create", response_class=HTMLResponse)
async def create_vm(
    request: Request,
    host: Annotated[str, Form()],
    # Empty is refused beside the field below: FastAPI's own "Field required" answered
    # with raw JSON that replaced the whole form (issue 15).
    name: Annotated[str, Form()] = "",
    *,
    vcpus: Annotated[int, Form()] = 1,
    memory_mib: Annotated[str, Form()] = "1024",
    memory_unit: Annotated[str, Form()] = "MiB",
    max_vcpus: Annotated[str, Form()] = "",
    max_memory_mib: Annotated[str, Form()] = "",
    max_memory_unit: Annotated[str, Form()] = "MiB",
    source: Annotated[str, Form()] = "blank",
    iso: Annotated[str, Form()] = "",
    import_volume: Annotated[str, Form()] = "",
    disk_gib: Annotated[str, Form()] = "0",
    disk_unit: Annotated[str, Form()] = "GiB",
    disk_pool: Annotated[str, Form()] = "",
    network: Annotated[str, Form()] = "",
    disk_bus: Annotated[str, Form()] = "virtio",
    nic_model: Annotated[str, Form()] = "virtio",
    firmware: Annotated[str, Form()] = "bios",
    tpm: Annotated[bool, Form()] = False,
    install_agent: Annotated[bool, Form()] = False,
    start: Annotated[bool, Form()] = False,
    then: Annotated[str, Form()] = "",
    os: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    tags: Annotated[str, Form()] = "",
    manager: ManagerDep,
    user: OperatorUser,
) -> Response:
    form = dict(await request.form())
    audit_target(f"{host}/{name}")
    # The review step's buttons: "Create and start", "Create and edit" (the new VM's
    # Hardware tab, not started), or plain "Create" (the "start" box of API-like posts).
    start = then == "start" or (start and then != "edit")
    form["start"] = "true" if start else ""
    if not name.strip():
        return await _form_error(request, manager, host, form, "name", "a name is required")
    try:
        mib, gib = units.memory_mib(memory_mib, memory_unit), units.disk_gib(disk_gib, disk_unit)
        max_mib = units.optional_memory_mib(
            max_memory_mib, max_memory_unit, "max_memory_mib", "Maximum memory"
        )
    except InvalidInput as e:
        return await _form_error(request, manager, host, form, e.field or "", e.message)
    if source == "cloud":
        # In the service's units (and said so, should the form come back with an error).
        sized = {"memory_mib": str(mib), "memory_unit": "MiB", "disk_gib": str(gib)}
        sized["disk_unit"] = "GiB"
        return await _create_from_cloud_image(request, manager, user, host, form | sized)
    try:
        if source == "upload":
            raise InvalidInput(
                "upload the ISO with the form beside the steps first: once it is uploaded, "
                "it is picked as the ISO image",
                field="source",
            )
        os_id = osinfo.choice(os).os_id if os else None
        install = InstallSource(kind=source)
        if source == "iso":
            install.pool, install.volume = _volume(iso)
        elif source == "import":
            install.pool, install.volume = _volume(import_volume)
        disks = [DiskSpec(pool=disk_pool, size_gib=gib, bus=disk_bus)] if gib > 0 else []
        nics = [nic_spec(network, nic_model)] if network else []
        spec = VmSpec(
            name=name,
            vcpus=vcpus,
            memory_mib=mib,
            max_vcpus=optional_int(max_vcpus, "max_vcpus"),
            max_memory_mib=max_mib,
            install=install,
            disks=disks,
            nics=nics,
            firmware=firmware,
            tpm=tpm,
            description=description or None,
            tags=[t.strip() for t in tags.split(",") if t.strip()],
            owner=user.username,
            start=start and not install_agent,
            os_id=os_id,
        )
        manager.ownership.check_vm_spec_volumes(user, host, spec)
        result = await manager.vms.create(host, spec)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        return await _form_error(request, manager, host, form, field, first["msg"])
    except KvmmError as e:
        # Refusals (a volume another VM uses, a name taken, ...) beside their field; a
        # host failure (5xx) stays an error page.
        if e.status >= 500:
            raise
        return await _form_error(request, manager, host, form, e.field or "", e.message)
    vm = result["vm"]
    toasts = [(f"Created {vm.name} ({result['domain_type']})", "ok")]
    if install_agent:
        try:
            installed = await manager.iso.install_agent(host, vm.name)
            toasts.append(("; ".join(installed.messages or ["guest agent ISO attached"]), "ok"))
        except KvmmError as e:
            toasts.append((f"guest agent not attached: {e.message}", "warn"))
        if start:
            await manager.vms.action(host, vm.name, "start")
    return redirect_with_toasts(_landing(host, vm.name, then), *toasts)


def _landing(host: str, name: str, then: str) -> str:
    """Where a create lands: the new VM's page, on its Hardware tab for "Create and edit"."""
    return f"/vms/{host}/{name}" + ("#hardware" if then == "edit" else "")


# Fields of the cloud-init spec -> the wizard's inputs (errors show beside them).
CLOUD_FIELDS = {
    "hostname": "ci_hostname",
    "name": "name",
    "size_gib": "disk_gib",
    "pool": "disk_pool",
    "image": "source",
    "image_pool": "source",
    "packages": "ci_packages",
    "memory_mib": "memory_mib",
    "vcpus": "vcpus",
    "nics": "network",
    "mode": "source",
}
USER_FIELDS = {"name": "ci_user", "ssh_authorized_keys": "ci_ssh_keys", "password": "ci_password"}
# The "Agent permissions" fieldset: one entry per line, added to the agent's defaults.
AGENT_FIELDS = {
    "allowed_read_paths": "ag_read",
    "allowed_write_paths": "ag_write",
    "command_whitelist": "ag_exec",
}
AGENT_KEYS = tuple(AGENT_FIELDS.values())


def _cloud_field(field: str) -> str:
    if field.startswith("users["):
        return USER_FIELDS.get(field.split(".", 1)[-1], "ci_user")
    if field.startswith("agent_policy"):
        return AGENT_FIELDS.get(field.split(".", 1)[-1], "ag_read")
    return CLOUD_FIELDS.get(field.split(".")[0], field.split(".")[0] or "form")


def _agent_policy(text: Callable[[str], str]) -> AgentPolicy | None:
    """The "Agent permissions" lines, added to the agent's safe defaults; all empty:
    None (the agent keeps its packaged config)."""
    lines = {key: [v.strip() for v in text(key).splitlines() if v.strip()] for key in AGENT_KEYS}
    if not any(lines.values()):
        return None
    base = AgentPolicy()
    return AgentPolicy(
        allowed_read_paths=list(dict.fromkeys([*base.allowed_read_paths, *lines["ag_read"]])),
        allowed_write_paths=list(dict.fromkeys([*base.allowed_write_paths, *lines["ag_write"]])),
        command_whitelist=list(dict.fromkeys(lines["ag_exec"])),
    )


async def _create_from_cloud_image(
    request: Request, manager: Manager, user: Principal, host: str, form: dict[str, Any]
) -> Response:
    """The "Cloud image" source: a linked copy of the image at the new disk's size and a
    cloud-init seed (hostname, user, keys, password, packages, the agent by default)."""

    def text(key: str) -> str:
        return str(form.get(key) or "").strip()

    name = text("name")
    image_pool, image = _volume(text("cloud_image"))
    try:
        if not image_pool or not image:
            raise InvalidInput("pick the cloud image volume", field="image")
        users = []
        keys = [k.strip() for k in text("ci_ssh_keys").splitlines() if k.strip()]
        if text("ci_user"):
            users.append(
                CloudUser(
                    name=text("ci_user"),
                    ssh_authorized_keys=keys,
                    password=str(form.get("ci_password") or "") or None,
                )
            )
        elif keys or form.get("ci_password"):
            raise InvalidInput("SSH keys and a password need a user", field="users[0].name")
        spec = CloudInitSpec(
            hostname=text("ci_hostname") or name,
            users=users,
            packages=text("ci_packages").split(),
            install_agent=form.get("install_agent") == "true",
            agent_policy=_agent_policy(text),
        )
        manager.ownership.check_volumes(user, host, [(image_pool, image)])
        result = await manager.cloudinit.provision(
            host,
            name=name,
            pool=text("disk_pool") or image_pool,
            image=image,
            image_pool=image_pool,
            size_gib=float(text("disk_gib") or 0),
            spec=spec,
            network=text("network") or None,
            vcpus=int(text("vcpus") or 1),
            memory_mib=int(text("memory_mib") or 1024),
            start=form.get("start") == "true",
            owner=user.username,
            created_by=user.username,
            mode=text("cloud_mode") or "linked",
            seed=form.get("cloud_seed") == "true",
        )
    except ValueError as e:  # pydantic's ValidationError and bad numbers
        return await _form_error(request, manager, host, form, "form", str(e).splitlines()[0])
    except KvmmError as e:
        if e.status >= 500:
            raise
        field = _cloud_field(e.field or "")
        return await _form_error(request, manager, host, form, field, e.message, mapped=True)
    how = "a full clone" if result["mode"] == "full" else "a copy-on-write overlay"
    seed = f"cloud-init seed {result['seed']}" if result["seed"] else "no cloud-init seed"
    message = f"Created {result['name']} from {image} ({how}, {seed})"
    landing = _landing(host, result["name"], text("then"))
    return redirect_with_toasts(landing, (message, "ok"))


async def _form_error(
    request: Request,
    manager: Manager,
    host: str,
    form: dict[str, Any],
    field: str,
    message: str,
    mapped: bool = False,
) -> HTMLResponse:
    # The wizard's fields are named after the spec's top-level fields where they can be;
    # "disks[0].size_gib" is the "New disk" field. An error of a field the form does not
    # show goes to the top of the form: never a re-render that shows nothing.
    key = re.sub(r"\[\d+\]", "", field.split(".")[0]) if field else "form"
    if not mapped:
        mapping = {"install": "source", "disks": "disk_gib", "nics": "network"}
        # DiskSpec/NicSpec refuse their own fields (loc "bus"/"model", no list prefix).
        key = {**mapping, "bus": "disk_bus", "model": "nic_model"}.get(key, key)
    if key not in FORM_FIELDS:
        key = "form"
    form.pop("ci_password", None)  # never echoed back into the page
    # An unticked box is absent from the post: the re-rendered form must show it unticked.
    form["install_agent"] = form.get("install_agent") == "true"
    form["cloud_seed"] = form.get("cloud_seed") == "true"
    return render(
        request,
        "vms/_new_form.html",
        status_code=422,  # swapped in anyway (data-form-errors, app.js); audited as refused
        hosts=[h.name for h in manager.registry.all()],
        host=host,
        form=form,
        errors={key: in_form_words(message)},
        **(await _choices(manager, host, principal(request))),
    )
