"""The VM service: list/get (inventory), create, lifecycle, delete, rename, metadata.

Every libvirt call runs on the host's worker threads (`HostConnection.run`). Functions
named `_x_blocking(conn, ...)` are the bodies that run there; the async methods wrap them.
Edits of vCPUs, memory and devices live in `vms/edit.py` (`VmService.edit`).

    svc = manager.vms
    result = await svc.create("local", VmSpec(name="web1", memory_mib=1024))
    await svc.action("local", "web1", "start")
    await svc.delete("local", "web1", remove_volumes=True)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

import libvirt

from kvmmanager.core.config import SpiceSettings
from kvmmanager.core.errors import (
    AgentUnavailable,
    Conflict,
    GuestError,
    HostUnavailable,
    InvalidInput,
    KvmmError,
    NotFound,
    Timeout,
)
from kvmmanager.services.guest.agents import AgentService
from kvmmanager.services.hosts.service import HostService
from kvmmanager.services.users.ownership import OwnershipService
from kvmmanager.services.vms import builder as vm_builder
from kvmmanager.services.vms.builder import lookup
from kvmmanager.services.vms.delete import VmDeleted, delete_blocking
from kvmmanager.services.vms.edit import VmEditor
from kvmmanager.services.vms.spec import VmSpec, validate_description, validate_name, validate_tags
from kvmmanager.virt import readers
from kvmmanager.virt.calls import CallKind, op_name
from kvmmanager.virt.clone_links import check_startable
from kvmmanager.virt.errors import libvirt_message, translate_libvirt_error
from kvmmanager.virt.events import Event, EventBus
from kvmmanager.virt.inventory import DomainInfo, Inventory
from kvmmanager.virt.registry import HostRegistry
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.metadata import NS_PREFIX, NS_URI, ManagerMetadata

log = logging.getLogger(__name__)
T = TypeVar("T")

STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}
INACTIVE = frozenset({"shutoff", "crashed", "nostate"})
RUNNING = frozenset({"running", "blocked", "shutdown"})
ACTIONS = ("start", "shutdown", "destroy", "reboot", "reset", "suspend", "resume")
ShutdownMode = Literal["acpi", "agent", "auto"]


@dataclass
class VmRef:
    """What an action answers: the VM as libvirt sees it right after the call."""

    host: str
    name: str
    uuid: str
    state: str
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def state_of(dom: libvirt.virDomain) -> str:
    return STATE_NAMES.get(dom.state()[0], "nostate")


def ref(host: str, dom: libvirt.virDomain, message: str = "", **details: Any) -> VmRef:
    return VmRef(host, dom.name(), dom.UUIDString(), state_of(dom), message, details)


def _need(dom: libvirt.virDomain, allowed: frozenset[str], why: str) -> str:
    state = state_of(dom)
    if state not in allowed:
        raise Conflict(f"vm '{dom.name()}' {why} (state: {state})", field="vm")
    return state


def _channel_connected(dom: libvirt.virDomain, name: str) -> bool:
    live = Domain.from_xml(dom.XMLDesc(0))
    return any(
        ch.target_name == name and ch.target_state == "connected" for ch in live.devices.channels
    )


class VmService:
    def __init__(
        self,
        spice: SpiceSettings,
        bus: EventBus,
        inventory: Inventory,
        registry: HostRegistry,
        ownership: OwnershipService,
        hosts: HostService,
        agents: AgentService,
    ) -> None:
        self._spice = spice
        self._bus = bus
        self._inventory = inventory
        self._registry = registry
        self._ownership = ownership
        self._hosts = hosts
        self._agents = agents
        self.edit = VmEditor(self)

    # ---- plumbing ----------------------------------------------------------------------

    async def run(
        self,
        host: str,
        fn: Callable[..., T],
        *args: Any,
        op: str | None = None,
        kind: CallKind | None = None,
        vm: str | None = None,
    ) -> T:
        """Run `fn(conn, *args)` on the host's worker thread, within the deadline of
        `kind`: `read` for what changes nothing, else lifecycle (or job inside a job).
        `vm` names the VM the call is about (its cap of calls in flight, virt/calls.py)."""
        hc = self._registry.get(host)
        return await hc.run(lambda: fn(hc.conn, *args), op=op or op_name(fn), kind=kind, vm=vm)

    async def run_on(
        self, host: str, vm: str, fn: Callable[..., T], *args: Any, kind: CallKind | None = None
    ) -> T:
        """Run `fn(dom, *args)` for the looked-up domain on the host's worker thread."""
        return await self.run(
            host,
            lambda conn: fn(lookup(conn, host, vm), *args),
            op=f"{op_name(fn)} '{vm}'",
            kind=kind,
            vm=vm,
        )

    # ---- reads (inventory only) --------------------------------------------------------

    def list(
        self,
        host: str | None = None,
        state: str | None = None,
        tag: str | None = None,
        q: str | None = None,
    ) -> list[DomainInfo]:
        if host is not None:
            hc = self._registry.get(host)  # NotFound naming the host
            if hc.never_listed:
                # An empty list would claim the host has no VMs; nobody knows yet.
                raise HostUnavailable(
                    f"host '{host}' is {hc.status} and has not been listed since the "
                    f"manager started: its VMs are unknown ({hc.status_reason})",
                    field="host",
                )
        if state is not None and state not in STATE_NAMES.values():
            # A misspelt state would otherwise filter everything out: an empty list
            # that reads as "no VM is in that state".
            raise InvalidInput(
                f"state: unknown VM state {state!r}; valid states: "
                + ", ".join(STATE_NAMES.values()),
                field="state",
            )
        out = self._inventory.domains(host)
        if state is not None:
            out = [d for d in out if d.state == state]
        if tag is not None:
            out = [d for d in out if tag in d.tags]
        if q:
            needle = q.lower()
            out = [
                d
                for d in out
                if needle in d.name.lower()
                or needle in (d.description or "").lower()
                or needle in (d.title or "").lower()
                or d.uuid.startswith(needle)
            ]
        return out

    def get(self, host: str, vm: str) -> DomainInfo:
        return self._registry.domain(host, vm)

    def config_changed(self, host: str, vm: str, what: str) -> None:
        """Say that a VM's next-boot configuration changed: libvirt sends no event when a
        running VM's persistent definition changes (setVcpusFlags/setMemoryFlags with
        CONFIG), and the live values it reports stay the same, so every open page of the
        VM (its Overview and Hardware) and every API event stream learn it from here."""
        with contextlib.suppress(NotFound):
            info = self.get(host, vm)
            data = {"name": info.name, "what": what}
            self._bus.publish(Event("domain.config", host=host, subject=info.uuid, data=data))

    async def refresh(self, host: str, uuid: str) -> DomainInfo:
        """Re-read one domain into the inventory now. For changes libvirt sends no event
        for (autostart), and so a create answers with the VM it made."""
        info = await self.run(
            host,
            lambda conn: readers.read_domain(host, conn.lookupByUUIDString(uuid)),
            kind="read",
        )
        return self._inventory.put_domain(info)

    async def xml(self, host: str, vm: str, inactive: bool = False) -> str:
        # Never VIR_DOMAIN_XML_SECURE: the VNC password stays inside libvirt.
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return await self.run_on(host, vm, lambda dom: dom.XMLDesc(flags), kind="read")

    # ---- create ------------------------------------------------------------------------

    async def create(
        self,
        host: str,
        spec: VmSpec,
        progress: Callable[..., Any] | None = None,
        created_by: str | None = None,
        host_paths: bool = False,
    ) -> dict[str, Any]:
        """Validate, create volumes, define, optionally start; undo everything on failure.
        `host_paths` lets a direct kernel boot name any host file (admins only): without
        it the kernel and initrd must be volumes of a pool.

        Returns {"vm": DomainInfo, "domain_type": "kvm"|"qemu", "accel_reason": str,
        "volumes": [paths of the volumes it created]}.
        """
        validate_name(spec.name)
        domain_type, reason = await self.domain_type(host)
        listen = self._spice.listen
        result = await self.run(
            host, _create_blocking, spec, domain_type, progress, created_by, listen, host_paths
        )
        info = await self.refresh(host, result["uuid"])
        return {
            "vm": info,
            "domain_type": domain_type,
            "accel_reason": reason,
            "volumes": result["volumes"],
        }

    async def validate(self, host: str, spec: VmSpec, host_paths: bool = False) -> None:
        """Check a create request against the host without creating anything (so a job
        is only started for a request that can work)."""
        domain_type, _ = await self.domain_type(host)

        def check(conn: libvirt.virConnect) -> None:
            facts = vm_builder.gather_facts(conn, spec, host_caps(conn, domain_type), host_paths)
            vm_builder.validate_spec(spec.model_copy(deep=True), facts)

        await self.run(host, check, kind="read")

    async def domain_type(self, host: str) -> tuple[str, str]:
        """`kvm` when the host service found KVM really working, else `qemu` (TCG), and why."""
        accel = await self._hosts.accel(host)
        return accel.domain_type, accel.reason

    async def describe(self, host: str, vm: str) -> VmRef:
        """The VM's name, uuid and state read from libvirt now."""
        return await self.run_on(host, vm, lambda dom: ref(host, dom), kind="read")

    # ---- lifecycle ---------------------------------------------------------------------

    async def action(self, host: str, vm: str, action: str, mode: ShutdownMode = "auto") -> VmRef:
        if action not in ACTIONS:
            raise InvalidInput(f"unknown action {action!r}", field="action")
        if action == "shutdown":
            return await self.shutdown(host, vm, mode)
        return await self.run_on(host, vm, _ACTION_FNS[action], host)

    async def shutdown(self, host: str, vm: str, mode: ShutdownMode = "auto") -> VmRef:
        """acpi: the power button. agent: qemu-guest-agent (through libvirt) or else the
        project's agent. auto: an agent when one is connected, else the power button."""
        if mode not in ("acpi", "agent", "auto"):
            raise InvalidInput("mode must be acpi, agent or auto", field="mode")
        kvmm = False
        if mode != "acpi":
            with contextlib.suppress(NotFound):
                info = self._inventory.domain(host, vm)
                kvmm = info.state == "running" and info.agent_status == "connected"
        res = await self.run_on(host, vm, _shutdown_blocking, host, mode, kvmm)
        if res.details.get("mode") != "kvmm-agent":
            return res
        try:
            out = await self._agents.power(host, res.uuid, "shutdown")
        except (AgentUnavailable, Timeout, GuestError) as exc:
            if mode == "agent":
                raise
            log.info("vm %s: agent shutdown failed (%s), pressing the power button", vm, exc)
            return await self.run_on(host, vm, _shutdown_blocking, host, "acpi", False)
        res.message = "shutdown requested through the kvmmanager agent"
        failed = {k: v for k, v in res.details.items() if k == "qga_failure"}
        res.details = {"mode": "agent", "agent": out.get("source", "kvmm"), **failed}
        return res

    async def delete(self, host: str, vm: str, remove_volumes: bool = False) -> VmDeleted:
        try:
            before: DomainInfo | None = self._inventory.domain(host, vm)
        except KvmmError:
            before = None
        out = await self.run_on(host, vm, _delete_blocking, host, remove_volumes)
        if before is not None and before.owner:
            # The disks it leaves behind stay its owner's (they lent it their owner until
            # now): without a VM they would otherwise become shared.
            self._ownership.inherit_disks(host, before, set(out.deleted_volumes))
        return out

    async def set_autostart(self, host: str, vm: str, enabled: bool) -> VmRef:
        def fn(dom: libvirt.virDomain) -> VmRef:
            if not dom.isPersistent():
                raise Conflict(f"vm '{dom.name()}' is transient: no autostart", field="autostart")
            dom.setAutostart(1 if enabled else 0)
            return ref(host, dom, f"autostart {'on' if enabled else 'off'}")

        res = await self.run_on(host, vm, fn)
        await self.refresh(host, res.uuid)
        return res

    async def rename(self, host: str, vm: str, new_name: str) -> VmRef:
        validate_name(new_name, "new_name")

        def fn(conn: libvirt.virConnect) -> VmRef:
            dom = lookup(conn, host, vm)
            _need(dom, INACTIVE, "must be shut off to be renamed")
            if new_name in {d.name() for d in conn.listAllDomains()}:
                raise Conflict(f"a vm named '{new_name}' already exists", field="new_name")
            dom.rename(new_name, 0)
            # The old handle may keep reporting the old name: look it up again.
            return ref(host, conn.lookupByName(new_name), f"renamed to '{new_name}'")

        return await self.run(host, fn, vm=vm)

    async def set_description(self, host: str, vm: str, description: str | None) -> VmRef:
        validate_description(description)

        def fn(dom: libvirt.virDomain) -> VmRef:
            dom.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_DESCRIPTION,
                description or None,
                None,
                None,
                _meta_flags(dom),
            )
            return ref(host, dom, "description updated")

        return await self.run_on(host, vm, fn)

    async def set_tags(self, host: str, vm: str, tags: list[str]) -> VmRef:
        tags = validate_tags(tags)

        def fn(dom: libvirt.virDomain) -> VmRef:
            meta = read_manager_metadata(dom)
            meta.tags = tags
            dom.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                meta.to_metadata_api(),
                NS_PREFIX,
                NS_URI,
                _meta_flags(dom),
            )
            return ref(host, dom, "tags updated", tags=tags)

        return await self.run_on(host, vm, fn)


def host_caps(conn: libvirt.virConnect, domain_type: str) -> vm_builder.HostCaps:
    """What the host's domain capabilities offer for `domain_type` (nothing when the
    driver has none to report, like the test driver)."""
    caps = vm_builder.domain_caps(conn, domain_type)
    if caps is None:
        return vm_builder.HostCaps()
    return vm_builder.HostCaps(
        uefi=caps.supports_uefi,
        secure_boot=caps.supports_secure_boot,
        tpm=caps.supports_tpm("emulator"),
        max_vcpus=caps.vcpu_max,
        arch=caps.arch,
        graphics=set(caps.graphics_types) if caps.graphics_supported else set(),
        passt="passt" in caps.interface_backends,
    )


def _create_blocking(
    conn: libvirt.virConnect,
    spec: VmSpec,
    domain_type: str,
    progress: Callable[..., Any] | None,
    created_by: str | None,
    spice_listen: str = "127.0.0.1",
    host_paths: bool = False,
) -> dict[str, Any]:
    caps = host_caps(conn, domain_type)
    return vm_builder.create_blocking(
        conn, spec, domain_type, caps, progress, created_by, spice_listen, host_paths
    )


def _meta_flags(dom: libvirt.virDomain) -> int:
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG if dom.isPersistent() else 0
    if dom.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    return flags


def read_manager_metadata(dom: libvirt.virDomain) -> ManagerMetadata:
    flags = (
        libvirt.VIR_DOMAIN_AFFECT_CONFIG if dom.isPersistent() else libvirt.VIR_DOMAIN_AFFECT_LIVE
    )
    try:
        return ManagerMetadata.from_metadata_api(
            dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS_URI, flags)
        )
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            raise
        return ManagerMetadata()


# ---- blocking bodies of the actions -----------------------------------------------------


def _start(dom: libvirt.virDomain, host: str) -> VmRef:
    state = state_of(dom)
    if state == "paused":
        raise Conflict(f"vm '{dom.name()}' is paused: resume it instead", field="vm")
    _need(dom, INACTIVE, "is already running")
    check_startable(dom)
    dom.create()
    return ref(host, dom, "started")


def _destroy(dom: libvirt.virDomain, host: str) -> VmRef:
    _need(dom, RUNNING | {"paused", "pmsuspended"}, "is not running")
    dom.destroy()
    return ref(host, dom, "powered off")


def _reboot(dom: libvirt.virDomain, host: str) -> VmRef:
    _need(dom, RUNNING, "is not running")
    dom.reboot(0)
    return ref(host, dom, "reboot requested")


def _reset(dom: libvirt.virDomain, host: str) -> VmRef:
    _need(dom, RUNNING | {"paused"}, "is not running")
    dom.reset(0)
    return ref(host, dom, "reset")


def _suspend(dom: libvirt.virDomain, host: str) -> VmRef:
    if state_of(dom) == "paused":
        raise Conflict(f"vm '{dom.name()}' is already paused", field="vm")
    _need(dom, RUNNING, "is not running")
    dom.suspend()
    return ref(host, dom, "paused")


def _resume(dom: libvirt.virDomain, host: str) -> VmRef:
    _need(dom, frozenset({"paused"}), "is not paused")
    dom.resume()
    return ref(host, dom, "resumed")


_ACTION_FNS: dict[str, Callable[[libvirt.virDomain, str], VmRef]] = {
    "start": _start,
    "destroy": _destroy,
    "reboot": _reboot,
    "reset": _reset,
    "suspend": _suspend,
    "resume": _resume,
}


def _shutdown_blocking(
    dom: libvirt.virDomain, host: str, mode: ShutdownMode, kvmm_connected: bool
) -> VmRef:
    """Shutdown by libvirt; answers mode 'kvmm-agent' (nothing done yet) when the caller
    must ask the project's agent instead."""
    _need(dom, RUNNING, "is not running")
    qga = mode != "acpi" and _channel_connected(dom, vm_builder.QGA_CHANNEL)
    qga_failure = None
    if qga:
        try:
            dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT)
        except libvirt.libvirtError as exc:
            qga_failure = _qga_failure(dom, exc)
            if mode == "agent" and not kvmm_connected:
                raise GuestError(
                    f"vm '{dom.name()}': qemu-guest-agent could not shut the guest down "
                    f"({qga_failure}); use mode 'acpi'",
                    field="mode",
                ) from exc
            log.info("vm %s: %s, trying the next way", dom.name(), qga_failure)
        else:
            return ref(host, dom, "shutdown requested through qemu-guest-agent", mode="agent")
    failed = {"qga_failure": qga_failure} if qga_failure else {}
    if mode != "acpi" and kvmm_connected:
        return ref(host, dom, "", mode="kvmm-agent", **failed)
    if mode == "agent":
        raise Conflict(
            f"vm '{dom.name()}': no guest agent is connected; use mode 'acpi'", field="mode"
        )
    try:
        dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
    except libvirt.libvirtError as exc:
        # Drivers without the flag (the test driver) only know their default, which is
        # the power button for every hypervisor that has one.
        if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
            raise
        dom.shutdown()
    if qga_failure:
        message = f"{qga_failure}: pressed the ACPI power button instead"
        return ref(host, dom, message, mode="acpi", **failed)
    return ref(host, dom, "shutdown requested (ACPI power button)", mode="acpi")


def _qga_failure(dom: libvirt.virDomain, exc: libvirt.libvirtError) -> str:
    """What qemu-guest-agent's failed shutdown said; a lost host connection is not the
    guest's failure and is raised as what it is."""
    err = translate_libvirt_error(exc, connection_dead=not dom.connect().isAlive())
    if isinstance(err, HostUnavailable):
        raise err
    return f"qemu-guest-agent failed to shut the guest down: {libvirt_message(exc)}"


def _delete_blocking(dom: libvirt.virDomain, host: str, remove_volumes: bool) -> VmDeleted:
    _need(dom, INACTIVE, "is running: power it off before deleting it")
    return delete_blocking(dom, host, remove_volumes)
