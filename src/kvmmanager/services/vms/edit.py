"""Editing an existing VM: vCPUs, memory, disks, NICs and CD-ROM media.

A running VM is changed live where libvirt allows it and in its persistent definition at
the same time; a shut-off VM has its persistent definition parsed with the XML models,
changed where the edit touches, and redefined. Every call answers what happened:

    {"applied_live": True, "next_boot": False, "message": "..."}

`applied_live` means the running guest has the change now; `next_boot` means (part of)
it only takes effect when the VM next boots.

    res = await manager.vms.edit.set_memory("local", "web1", 2048)
    res = await manager.vms.edit.insert_media("local", "web1", "isos", "debian.iso")
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

import libvirt

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound
from kvmmanager.services.vms import builder as vm_builder
from kvmmanager.services.vms import spec as vm_spec
from kvmmanager.services.vms.nic_detach import detach_nic_blocking
from kvmmanager.services.vms.resources import ResourceEdit
from kvmmanager.services.vms.spec import DiskSpec, NicSpec
from kvmmanager.virt.calls import CallKind
from kvmmanager.virt.xml.devices import Disk, Interface
from kvmmanager.virt.xml.domain import Domain

T = TypeVar("T")

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
INACTIVE_SECURE = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
# How long a live memory change waits for the guest's balloon driver to act on it.
BALLOON_WAIT_SECONDS = 3.0
BALLOON_POLL_SECONDS = 0.2


@dataclass
class EditResult:
    applied_live: bool
    next_boot: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _active(dom: libvirt.virDomain) -> bool:
    return bool(dom.isActive())


def _flags(dom: libvirt.virDomain) -> int:
    """LIVE for a running VM, CONFIG for a persistent one, both when both apply."""
    flags = LIVE if _active(dom) else 0
    if dom.isPersistent():
        flags |= CONFIG
    return flags


def redefine(dom: libvirt.virDomain, change: Callable[[Domain], Any]) -> Any:
    """Parse the persistent definition, apply `change`, define it again.

    Read with XML_SECURE: without it libvirt leaves out the VNC password and redefining
    would silently drop it."""
    xml = Domain.from_xml(dom.XMLDesc(INACTIVE_SECURE))
    out = change(xml)
    dom.connect().defineXML(xml.to_xml())
    return out


def _xml(dom: libvirt.virDomain) -> Domain:
    """The definition the edit is judged against: live when running, else persistent."""
    return Domain.from_xml(dom.XMLDesc(0 if _active(dom) else libvirt.VIR_DOMAIN_XML_INACTIVE))


def _used_targets(dom: libvirt.virDomain) -> set[str]:
    used = {d.target_dev for d in _xml(dom).devices.disks if d.target_dev}
    if _active(dom) and dom.isPersistent():
        inactive = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        used |= {d.target_dev for d in inactive.devices.disks if d.target_dev}
    return used


def _free_target(dom: libvirt.virDomain, bus: str) -> str:
    used = _used_targets(dom)
    for i in range(0, 26 * 27):
        dev = vm_builder.disk_target(bus, i)
        if dev not in used:
            return dev
    raise Conflict(f"no free {bus} disk target left", field="bus")


def random_mac() -> str:
    # 52:54:00 is the QEMU/KVM prefix libvirt uses itself.
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def _new_maximum(current: int, old_max: int, target: int, given: int | None) -> int:
    """The configured maximum after an edit: the one given; else, for a VM that has a
    hot-add maximum above what it runs with, that maximum (raised to `target` if needed);
    else (no separate maximum) the maximum follows `target` as before."""
    if given is not None:
        return given
    if old_max > current:
        return max(old_max, target)
    return target


def _set_vcpus(dom: libvirt.virDomain, vcpus: int | None, maximum: int | None = None) -> EditResult:
    running = _active(dom)
    persistent = bool(dom.isPersistent())
    applied_live = False
    live_note = ""
    scope = CONFIG if persistent else LIVE
    cfg_max = dom.vcpusFlags(scope | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
    cfg_cur = dom.vcpusFlags(scope)
    target = cfg_cur if vcpus is None else vcpus
    new_max = _new_maximum(cfg_cur, cfg_max, target, maximum)
    if target > new_max:
        raise InvalidInput(
            f"max_vcpus={new_max} is less than vcpus={target}: the maximum for hot-add must "
            "be at least what the VM has",
            field="max_vcpus",
        )
    if running and vcpus is not None:
        live_max = dom.vcpusFlags(LIVE | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
        if vcpus <= live_max:
            try:
                dom.setVcpusFlags(vcpus, LIVE)
                applied_live = True
            except libvirt.libvirtError as exc:
                live_note = f" (live change refused: {exc.get_error_message()})"
        else:
            live_note = (
                f" (the running guest is limited to {live_max} vCPUs, its maximum when it booted)"
            )
    if persistent:
        # Never current > maximum in between: raise the maximum first, lower it last.
        if new_max >= cfg_cur:
            dom.setVcpusFlags(new_max, CONFIG | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
            dom.setVcpusFlags(target, CONFIG)
        else:
            dom.setVcpusFlags(target, CONFIG)
            dom.setVcpusFlags(new_max, CONFIG | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
    elif not applied_live:
        raise Conflict(f"vm '{dom.name()}' is transient and refused the change{live_note}")
    res = (
        _result(running, applied_live, persistent, f"vCPUs set to {target}", live_note)
        if vcpus is not None
        else EditResult(False, True, "")
    )
    shown = f"{new_max} vCPUs"
    return _with_maximum(res, running, maximum, new_max, cfg_max, shown, "max_vcpus")


def _with_maximum(
    res: EditResult,
    running: bool,
    given: int | None,
    new_max: int,
    old_max: int,
    shown: str,
    key: str,
) -> EditResult:
    """Say what became of the hot-add maximum: a running VM keeps the one it booted with
    (QEMU fixes it at start), so a new one waits for the next boot."""
    res.details[key] = new_max
    if given is None or new_max == old_max:
        if not res.message:
            res.message = f"maximum {shown}: unchanged"
            res.next_boot = False
        return res
    said = f"maximum set to {shown}"
    if running:
        said += " from the next boot (a running VM keeps the maximum it booted with)"
    elif not res.message:
        said += ": takes effect at the next boot"
    res.message = f"{res.message}; {said}" if res.message else said
    res.next_boot = True
    return res


def _set_memory(
    dom: libvirt.virDomain, memory_mib: int | None, max_mib: int | None = None
) -> EditResult:
    running = _active(dom)
    persistent = bool(dom.isPersistent())
    applied_live = False
    live_note = ""
    details: dict[str, Any] = {}
    defined = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if persistent else 0))
    cfg_max = defined.memory or 0
    cfg_cur = defined.current_memory or cfg_max
    kib = cfg_cur if memory_mib is None else memory_mib * 1024
    new_max = _new_maximum(cfg_cur, cfg_max, kib, None if max_mib is None else max_mib * 1024)
    if kib > new_max:
        raise InvalidInput(
            f"max_memory_mib={new_max // 1024} is less than memory_mib={kib // 1024}: the "
            "maximum for hot-add must be at least what the VM has",
            field="max_memory_mib",
        )
    if running and memory_mib is not None:
        live_max = dom.maxMemory()
        if kib <= live_max:
            try:
                # The balloon: the guest gives memory back or gets it, up to its maximum.
                # libvirt accepts the target whether or not a balloon driver in the guest
                # acts on it: only what the guest then has says whether it happened.
                dom.setMemoryFlags(kib, LIVE)
                got = _balloon_settles(dom, kib)
                applied_live = got == kib
                if not applied_live:
                    live_note = (
                        f" (the running guest still has {got // 1024} MiB: no balloon driver "
                        "in it answered the new target)"
                    )
                    details["guest_mib"] = got // 1024
            except libvirt.libvirtError as exc:
                live_note = f" (live change refused: {exc.get_error_message()})"
        else:
            live_note = (
                f" (the running guest is limited to {live_max // 1024} MiB, its maximum when "
                "it booted)"
            )
    if persistent:
        # Never current > maximum in between: raise the maximum first, lower it last.
        if new_max >= cfg_cur:
            dom.setMemoryFlags(new_max, CONFIG | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
            dom.setMemoryFlags(kib, CONFIG)
        else:
            dom.setMemoryFlags(kib, CONFIG)
            dom.setMemoryFlags(new_max, CONFIG | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
    elif not applied_live:
        raise Conflict(f"vm '{dom.name()}' is transient and refused the change{live_note}")
    res = (
        _result(running, applied_live, persistent, f"memory set to {kib // 1024} MiB", live_note)
        if memory_mib is not None
        else EditResult(False, True, "")
    )
    res.details.update(details)
    given = None if max_mib is None else max_mib * 1024
    shown = f"{new_max // 1024} MiB"
    return _with_maximum(res, running, given, new_max, cfg_max, shown, "max_memory_kib")


def _balloon_settles(dom: libvirt.virDomain, kib: int) -> int:
    """The guest's current memory (KiB) once it reached `kib` or stopped moving, within
    BALLOON_WAIT_SECONDS: a balloon driver moves in steps, a guest without one never."""
    deadline = time.monotonic() + BALLOON_WAIT_SECONDS
    current = int(dom.info()[2])
    while current != kib and time.monotonic() < deadline:
        time.sleep(BALLOON_POLL_SECONDS)
        current = int(dom.info()[2])
    return current


def _result(running: bool, live: bool, persistent: bool, what: str, note: str) -> EditResult:
    if not running:
        return EditResult(False, True, f"{what}: takes effect at the next boot")
    if live:
        return EditResult(True, False, f"{what}: applied now" + (" and kept" if persistent else ""))
    return EditResult(False, True, f"{what}: takes effect at the next boot{note}")


def _apply_device(
    dom: libvirt.virDomain, xml: str, how: str, change: Callable[[Domain], Any]
) -> EditResult:
    """Attach/detach/update one device: live+config through libvirt's device API when
    running, else by redefining the changed persistent definition."""
    if _active(dom):
        call = {
            "attach": dom.attachDeviceFlags,
            "detach": dom.detachDeviceFlags,
            "update": dom.updateDeviceFlags,
        }[how]
        call(xml, _flags(dom))
        return EditResult(True, False, "applied now" + (" and kept" if dom.isPersistent() else ""))
    redefine(dom, change)
    return EditResult(False, True, "saved; the VM is shut off")


class VmCalls(Protocol):
    """What an editor needs of the VM service: its two ways of running a blocking call on
    a host's worker thread (VmService.run and run_on, which carry the call deadlines and
    the per-VM cap). Named here so that vms.py, which builds the editor, is the only one
    of the two modules that imports the other."""

    async def run(
        self,
        host: str,
        fn: Callable[..., T],
        *args: Any,
        op: str | None = None,
        kind: CallKind | None = None,
        vm: str | None = None,
    ) -> T: ...

    async def run_on(
        self, host: str, vm: str, fn: Callable[..., T], *args: Any, kind: CallKind | None = None
    ) -> T: ...

    def config_changed(self, host: str, vm: str, what: str) -> None:
        """Publish that the VM's next-boot configuration changed (libvirt says nothing)."""


class VmEditor:
    def __init__(self, service: VmCalls) -> None:
        self.svc = service

    async def _host_limits(self, host: str) -> tuple[int, int]:
        info = await self.svc.run(host, lambda conn: conn.getInfo(), kind="read")
        return info[2], info[1]

    async def set_vcpus(
        self, host: str, vm: str, vcpus: int | None, max_vcpus: int | None = None
    ) -> dict[str, Any]:
        """vCPUs now (hot-plugged into a running VM up to its maximum) and/or the hot-add
        maximum (`max_vcpus`, from the next boot when running)."""
        host_max, _ = await self._host_limits(host)
        if vcpus is not None:
            vm_spec.validate_vcpus(vcpus, host_max)
        if max_vcpus is not None:
            vm_spec.validate_vcpus(max_vcpus, host_max, "max_vcpus")
            if vcpus is not None:
                vm_spec.validate_maximum(vcpus, max_vcpus, "vcpus", "max_vcpus")
        res = await self.svc.run_on(host, vm, _set_vcpus, vcpus, max_vcpus)
        if res.next_boot:
            self.svc.config_changed(host, vm, "vcpus")
        return res.to_dict()

    async def set_memory(
        self, host: str, vm: str, memory_mib: int | None, max_memory_mib: int | None = None
    ) -> dict[str, Any]:
        """Memory now (through the balloon in a running VM, up to its maximum) and/or the
        maximum it may grow to (`max_memory_mib`, from the next boot when running)."""
        _, host_mib = await self._host_limits(host)
        if memory_mib is not None:
            vm_spec.validate_memory(memory_mib, host_mib)
        if max_memory_mib is not None:
            vm_spec.validate_memory(max_memory_mib, host_mib, "max_memory_mib")
            if memory_mib is not None:
                vm_spec.validate_maximum(memory_mib, max_memory_mib, "memory_mib", "max_memory_mib")
        res = await self.svc.run_on(host, vm, _set_memory, memory_mib, max_memory_mib)
        if res.next_boot:
            self.svc.config_changed(host, vm, "memory")
        return res.to_dict()

    async def set_resources(self, host: str, vm: str, edit: ResourceEdit) -> list[str]:
        """Apply a resources form's edit (resources.resource_edit): vCPUs first, then
        memory; the message of each change made."""
        messages = []
        if edit.cpu:
            res = await self.set_vcpus(host, vm, edit.vcpus, edit.max_vcpus)
            messages.append(str(res["message"]))
        if edit.memory:
            res = await self.set_memory(host, vm, edit.memory_mib, edit.max_memory_mib)
            messages.append(str(res["message"]))
        return messages

    # ---- disks -------------------------------------------------------------------------

    async def attach_disk(self, host: str, vm: str, spec: DiskSpec) -> dict[str, Any]:
        return await self.svc.run(host, _attach_disk_blocking, host, vm, spec, vm=vm)

    async def detach_disk(self, host: str, vm: str, target: str) -> dict[str, Any]:
        def fn(dom: libvirt.virDomain) -> dict[str, Any]:
            disk = _xml(dom).devices.disk_by_target(target)
            if disk is None or disk.device == "cdrom":
                raise NotFound(f"vm '{dom.name()}' has no disk '{target}'", field="target")

            def change(xml: Domain) -> None:
                found = xml.devices.disk_by_target(target)
                if found is not None:
                    xml.devices.remove(found)

            res = _apply_device(dom, disk.to_xml(), "detach", change)
            res.details = {"target": target, "path": disk.source_path}
            return res.to_dict()

        return await self.svc.run_on(host, vm, fn)

    # ---- NICs --------------------------------------------------------------------------

    async def attach_nic(self, host: str, vm: str, spec: NicSpec) -> dict[str, Any]:
        if (spec.network is not None) + (spec.bridge is not None) + spec.user != 1:
            raise InvalidInput("give exactly one of network, bridge or user", field="network")
        if spec.bridge is not None and not vm_spec.BRIDGE_RE.fullmatch(spec.bridge):
            raise InvalidInput("invalid bridge name", field="bridge")
        mac = vm_spec.validate_mac(spec.mac, "mac") or random_mac()

        def fn(conn: libvirt.virConnect) -> dict[str, Any]:
            if spec.network is not None and spec.network not in {
                n.name() for n in conn.listAllNetworks()
            }:
                raise InvalidInput(f"unknown network {spec.network!r}", field="network")
            dom = vm_builder.lookup(conn, host, vm)
            if _xml(dom).devices.interface_by_mac(mac) is not None:
                raise Conflict(f"vm '{dom.name()}' already has a NIC with MAC {mac}", field="mac")
            if spec.user:
                nic = vm_builder.user_interface(
                    spec.model, vm_builder.passt_offered(conn, _xml(dom).type or "qemu")
                )
            else:
                nic = Interface(type="network" if spec.network else "bridge", model=spec.model)
            if spec.network:
                nic.source_network = spec.network
            elif spec.bridge:
                nic.source_bridge = spec.bridge
            nic.mac_address = mac
            res = _apply_device(dom, nic.to_xml(), "attach", lambda x: x.devices.add(nic.copy()))
            source = spec.network or spec.bridge or f"user ({nic.backend_type or 'slirp'})"
            res.details = {"mac": mac, "source": source}
            return res.to_dict()

        return await self.svc.run(host, fn, vm=vm)

    async def detach_nic(self, host: str, vm: str, mac: str) -> dict[str, Any]:
        mac = vm_spec.validate_mac(mac, "mac") or ""

        def change(xml: Domain) -> None:
            found = xml.devices.interface_by_mac(mac)
            if found is not None:
                xml.devices.remove(found)

        def fn(dom: libvirt.virDomain) -> dict[str, Any]:
            done = detach_nic_blocking(dom, mac, lambda: redefine(dom, change))
            return EditResult(
                done.applied_live, done.next_boot, done.message, {"mac": mac}
            ).to_dict()

        return await self.svc.run_on(host, vm, fn)

    # ---- CD-ROM media ------------------------------------------------------------------

    async def insert_media(
        self, host: str, vm: str, pool: str, volume: str, target: str | None = None
    ) -> dict[str, Any]:
        def fn(conn: libvirt.virConnect) -> dict[str, Any]:
            dom = vm_builder.lookup(conn, host, vm)
            path = _volume_path(conn, pool, volume)
            return _media_blocking(dom, target, path)

        return await self.svc.run(host, fn, vm=vm)

    async def eject_media(self, host: str, vm: str, target: str | None = None) -> dict[str, Any]:
        return await self.svc.run_on(host, vm, _media_blocking, target, None)


def _volume_path(conn: libvirt.virConnect, pool: str, volume: str) -> str:
    try:
        p = conn.storagePoolLookupByName(pool)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise InvalidInput(f"unknown pool {pool!r}", field="pool") from exc
        raise
    if not p.isActive():
        raise Conflict(f"pool '{pool}' is not active", field="pool")
    try:
        return p.storageVolLookupByName(volume).path()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise InvalidInput(
                f"unknown volume {volume!r} in pool {pool!r}", field="volume"
            ) from exc
        raise


def _pick_cdrom(xml: Domain, target: str | None, name: str) -> Disk:
    drives = xml.devices.cdroms()
    if target is not None:
        drives = [d for d in drives if d.target_dev == target]
        if not drives:
            raise NotFound(f"vm '{name}' has no CD-ROM drive '{target}'", field="target")
    if not drives:
        raise Conflict(f"vm '{name}' has no CD-ROM drive", field="target")
    return drives[0]


def _media_blocking(dom: libvirt.virDomain, target: str | None, path: str | None) -> dict[str, Any]:
    drive = _pick_cdrom(_xml(dom), target, dom.name())
    dev = drive.target_dev

    def set_media(disk: Disk) -> None:
        if path is None:
            disk.clear_source()
        else:
            disk.clear_source()
            disk.type = "file"
            disk.source_file = path

    set_media(drive)

    def change(xml: Domain) -> None:
        found = xml.devices.disk_by_target(dev or "")
        if found is None:
            raise Conflict(f"vm '{dom.name()}' has no CD-ROM drive '{dev}' in its definition")
        set_media(found)

    res = _apply_device(dom, drive.to_xml(), "update", change)
    res.message = ("inserted " + path if path else "ejected") + f" ({dev}): " + res.message
    res.details = {"target": dev, "path": path}
    return res.to_dict()


def _attach_disk_blocking(
    conn: libvirt.virConnect, host: str, vm: str, spec: DiskSpec
) -> dict[str, Any]:
    dom = vm_builder.lookup(conn, host, vm)
    try:
        pool = conn.storagePoolLookupByName(spec.pool)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise InvalidInput(f"unknown pool {spec.pool!r}", field="pool") from exc
        raise
    if spec.volume is None and (
        spec.size_gib is None or not 0 < spec.size_gib <= vm_spec.MAX_DISK_GIB
    ):
        raise InvalidInput(f"size_gib must be > 0 and <= {vm_spec.MAX_DISK_GIB}", field="size_gib")
    created: list[libvirt.virStorageVol] = []
    if spec.volume is not None and pool.isActive():
        try:
            vol = pool.storageVolLookupByName(spec.volume)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise NotFound(
                    f"volume '{spec.pool}/{spec.volume}' does not exist", field="volume"
                ) from exc
            raise
        # Checked here with the field the caller named (`volume`); this VM's own disks
        # count too (plan_disks below is told only about the others').
        vm_builder.refuse_unusable_disk(
            vol, spec.pool, vm_builder.paths_used_by_others(conn, None), "volume"
        )
    if spec.volume is None:
        existing = set(pool.listVolumes()) if pool.isActive() else set()
        if spec.name is None:
            n = 1
            while f"{dom.name()}-{n}.qcow2" in existing:
                n += 1
            spec = spec.model_copy(update={"name": f"{dom.name()}-{n}.qcow2"})
        vm_spec.validate_name(spec.name, "name")
        if spec.name in existing:
            raise Conflict(
                f"volume {spec.name!r} already exists in pool {spec.pool!r}", field="name"
            )
    one = vm_spec.VmSpec(name=dom.name(), disks=[spec])
    try:
        plans = vm_builder.plan_disks(
            conn, one, created, vm_builder.paths_used_by_others(conn, dom.UUIDString()), None
        )
        plan = plans[0]
        disk = Disk(
            type="file", device="disk", driver_name="qemu", driver_type=plan.format,
            source_file=plan.path, target_dev=_free_target(dom, plan.bus), target_bus=plan.bus,
        )  # fmt: skip
        res = _apply_device(dom, disk.to_xml(), "attach", lambda x: x.devices.add(disk.copy()))
    except BaseException:
        for vol in created:
            vol.delete(0)
        raise
    res.details = {"target": disk.target_dev, "path": plan.path, "created": bool(created)}
    return res.to_dict()
