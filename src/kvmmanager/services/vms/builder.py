"""Spec -> domain XML (through the `kvmmanager.virt.xml` models only) and the whole create
in the host's worker thread: volumes, define, start, and undoing all of it on failure.
The spec and its validation live in `vm_spec` (re-exported here).

    facts = HostFacts(max_vcpus=8, memory_mib=16384, pools={"default"}, networks={"default"})
    validate_spec(spec, facts)
    xml = build_domain(spec, BuildInputs(domain_type="qemu", disks=[...])).to_xml()
"""

from __future__ import annotations

import logging
import re
import uuid as uuid_mod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import libvirt

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound
from kvmmanager.services.storage import image_probe
from kvmmanager.services.storage.xml import build_volume_xml
from kvmmanager.services.vms.spec import (
    AGENT_CHANNEL,
    BRIDGE_RE,
    MAX_DISK_GIB,
    QGA_CHANNEL,
    DiskSpec,
    HostFacts,
    InstallSource,
    NicSpec,
    VmSpec,
    default_volume_name,
    generate_vnc_password,
    validate_description,
    validate_mac,
    validate_maximum,
    validate_memory,
    validate_name,
    validate_spec,
    validate_tags,
    validate_vcpus,
)
from kvmmanager.virt import scan
from kvmmanager.virt.xml.capabilities import DomainCapabilities
from kvmmanager.virt.xml.devices import (
    Channel,
    Console,
    Controller,
    Disk,
    Graphics,
    Input,
    Interface,
    MemBalloon,
    Redirdev,
    Rng,
    Serial,
    Tpm,
    Video,
)
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.volume import Volume

# The spec names stay importable from here (the web UI and agent_install use them).
__all__ = [
    "AGENT_CHANNEL",
    "BRIDGE_RE",
    "MAX_DISK_GIB",
    "QGA_CHANNEL",
    "BuildInputs",
    "DiskPlan",
    "DiskSpec",
    "HostCaps",
    "HostFacts",
    "InstallSource",
    "NicSpec",
    "VmSpec",
    "boot_volumes",
    "build_domain",
    "cdrom_bus",
    "create_blocking",
    "default_volume_name",
    "disk_paths",
    "disk_target",
    "disk_volume_path",
    "domain_caps",
    "generate_vnc_password",
    "is_iso_volume",
    "lookup",
    "passt_offered",
    "paths_used_by_others",
    "plan_disks",
    "refuse_unusable_disk",
    "undefine_flags",
    "user_interface",
    "validate_description",
    "validate_mac",
    "validate_maximum",
    "validate_memory",
    "validate_name",
    "validate_spec",
    "validate_tags",
    "validate_vcpus",
]

log = logging.getLogger(__name__)

SPICE_CHANNEL = "com.redhat.spice.0"  # the spice-vdagent port (clipboard, resolution)
USB_REDIR_SLOTS = 2  # USB devices a SPICE client can pass through at once


SPICE_LOCKED_UNTIL = "1970-01-01T00:00:00"


def vnc_display(password: str) -> Graphics:
    """The browser console's VNC display: on a unix socket in the domain's private
    directory, never a TCP port. The console reaches it through libvirt
    (virDomainOpenGraphicsFD), which does not care how QEMU listens."""
    return Graphics(type="vnc", listen_socket=True, passwd=password)


def locked_spice(listen: str) -> Graphics:
    """A SPICE display nobody can log into until a .vv download sets a one-time password
    (services/vms/spice.py). Measured on QEMU 7.2: a display started with no password has
    ticketing disabled, and QEMU then refuses every later set_password ("Could not set
    password"); a random password that expired long ago keeps ticketing on."""
    return Graphics(type="spice", autoport=True, listen_address=listen,
                    passwd=generate_vnc_password(), passwd_valid_to=SPICE_LOCKED_UNTIL)  # fmt: skip


def add_usb_redirection(devs: Any) -> list[str]:
    """SPICE USB redirection: a USB controller able to take redirected devices (qemu-xhci,
    USB 3 at full speed; an existing real controller is kept) and USB_REDIR_SLOTS
    spicevmc redirdevs. Answers what it changed."""
    changes = []
    usb = [c for c in devs.controllers if c.type == "usb"]
    if not usb or all(c.model == "none" for c in usb):
        for c in usb:
            devs.remove(c)
        devs.add(Controller(type="usb", index=0, model="qemu-xhci"))
        changes.append("usb controller: qemu-xhci")
    missing = USB_REDIR_SLOTS - len([r for r in devs.redirdevs if r.type == "spicevmc"])
    for _ in range(missing):
        devs.add(Redirdev(bus="usb", type="spicevmc"))
    if missing > 0:
        changes.append(f"USB redirection: {USB_REDIR_SLOTS} slots")
    return changes


def remove_usb_redirection(devs: Any) -> list[str]:
    gone = [r for r in devs.redirdevs if r.type == "spicevmc"]
    for r in gone:
        devs.remove(r)
    return ["removed USB redirection"] if gone else []


UUID_RE = re.compile(r"[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")


def lookup(conn: libvirt.virConnect, host: str, vm: str) -> libvirt.virDomain:
    """The domain by UUID or name; NotFound naming `vm` otherwise."""
    try:
        if UUID_RE.fullmatch(vm):
            try:
                return conn.lookupByUUIDString(vm)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
        return conn.lookupByName(vm)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise NotFound(f"vm '{vm}' not found on host '{host}'", field="vm") from exc
        raise


# ---- spec -> Domain ---------------------------------------------------------------------


@dataclass
class HostCaps:
    """What the host's domain capabilities offer (None/False when it has none to offer)."""

    uefi: bool = False
    secure_boot: bool = False
    tpm: bool = False
    max_vcpus: int | None = None
    arch: str | None = None
    graphics: set[str] | None = None
    # libvirt's passt backend for user-mode NICs; without it they use QEMU's slirp.
    passt: bool = False


@dataclass
class DiskPlan:
    path: str
    format: str
    bus: str


@dataclass
class BuildInputs:
    domain_type: str
    arch: str
    disks: list[DiskPlan]
    cdrom_path: str | None = None
    vnc_password: str = field(default_factory=generate_vnc_password)
    created_by: str | None = None
    spice_listen: str = "127.0.0.1"
    passt: bool = False  # user-mode NICs through passt (else QEMU's slirp)


def user_interface(model: str, passt: bool) -> Interface:
    """A user-mode NIC: libvirt's passt backend where the host offers it, else QEMU's
    built-in slirp (no backend element). libvirt 9.0 here refuses `<backend type='passt'>`
    at define time ("Invalid value for attribute 'type' in element 'backend'")."""
    iface = Interface(type="user", model=model)
    if passt:
        iface.backend_type = "passt"
    return iface


def domain_caps(conn: libvirt.virConnect, domain_type: str) -> DomainCapabilities | None:
    """The host's domain capabilities for `domain_type`, or None when the driver has none
    to report (the test driver)."""
    try:
        return DomainCapabilities.from_xml(
            conn.getDomainCapabilities(None, None, None, domain_type, 0)
        )
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
        return None


def passt_offered(conn: libvirt.virConnect, domain_type: str) -> bool:
    """Whether the host's domain capabilities list passt as a user-mode NIC backend."""
    caps = domain_caps(conn, domain_type)
    return caps is not None and "passt" in caps.interface_backends


def disk_target(bus: str, index: int) -> str:
    prefix = {"virtio": "vd", "ide": "hd"}.get(bus, "sd")
    letters = ""
    n = index
    while True:
        letters = chr(ord("a") + n % 26) + letters
        n = n // 26 - 1
        if n < 0:
            return prefix + letters


def cdrom_bus(machine: str | None) -> str:
    # q35 has no IDE; i440fx ("pc", libvirt's x86 default) boots IDE CD-ROMs everywhere.
    return "sata" if machine and "q35" in machine else "ide"


def boot_order(install_kind: str, disks: int) -> dict[str, int]:
    """Per-device boot order ("cdrom", "nic0", "disk0"...) for an install kind.

    Per device, never `<os><boot dev=...>`: with boot dev='cdrom' SeaBIOS tries only the
    FIRST CD-ROM drive, and the agent ISO drive added beside the install CD (hda, before
    hdc) took that place ("Boot failed: Could not read from CDROM", issue 15). A drive
    with no order (the agent's) is never booted: libvirt starts QEMU with strict boot."""
    if install_kind == "kernel":
        return {}
    disk_keys = [f"disk{i}" for i in range(disks)]
    if install_kind == "iso":
        keys = ["cdrom", *disk_keys]
    elif install_kind == "pxe":
        # The network first; once an OS is installed on the disk, the PXE server's
        # answer (or its absence) hands over to the disk.
        keys = ["nic0", *disk_keys]
    else:
        keys = [*disk_keys, "cdrom"]
    return {key: n for n, key in enumerate(keys, start=1)}


def build_domain(spec: VmSpec, inp: BuildInputs) -> Domain:
    """A complete, persistent-ready domain for `spec`; only the models write XML."""
    kib = spec.memory_mib * 1024
    # <memory> is the maximum the balloon may give the guest, <currentMemory> what it
    # starts with; <vcpu> the most vCPUs it may have, current= those online at boot.
    max_kib = (spec.max_memory_mib or spec.memory_mib) * 1024
    max_vcpus = spec.max_vcpus or spec.vcpus
    dom = Domain(
        type=inp.domain_type, name=spec.name, memory=max_kib, current_memory=kib, vcpus=max_vcpus
    )
    if max_vcpus > spec.vcpus:
        dom.vcpus_current = spec.vcpus
    if spec.description:
        dom.description = spec.description
    meta = dom.manager_metadata
    if spec.tags:
        meta.tags = spec.tags
    if spec.owner:
        meta.owner = spec.owner
    if inp.created_by:
        meta.created_by = inp.created_by
    meta.agent_enabled = True
    if spec.os_id:
        dom.os_info.os_id = spec.os_id

    uefi = spec.firmware == "uefi"
    machine = "q35" if uefi else None
    dom.os.os_type = "hvm"
    dom.os.arch = inp.arch
    if machine:
        dom.os.machine = machine
    if uefi:
        dom.os.firmware = "efi"
        dom.os.secure_boot = spec.secure_boot
    inst = spec.install
    if inst.kind == "kernel":
        dom.os.kernel = inst.kernel
        dom.os.initrd = inst.initrd
        dom.os.cmdline = inst.cmdline
    dom.features.acpi = True
    dom.features.apic = True
    if spec.secure_boot:
        dom.features.smm = True
    if inp.domain_type == "kvm":
        dom.cpu_mode = "host-passthrough"
    dom.clock_offset = "utc"
    dom.on_poweroff, dom.on_reboot, dom.on_crash = "destroy", "restart", "destroy"

    devs = dom.devices
    order = boot_order(inst.kind, len(inp.disks))
    per_bus: dict[str, int] = {}
    for n, plan in enumerate(inp.disks):
        idx = per_bus.get(plan.bus, 0)
        per_bus[plan.bus] = idx + 1
        disk = Disk(
            type="file", device="disk", driver_name="qemu", driver_type=plan.format,
            source_file=plan.path, target_dev=disk_target(plan.bus, idx), target_bus=plan.bus,
        )  # fmt: skip
        disk.boot_order = order.get(f"disk{n}")
        devs.add(disk)
    cd_bus = cdrom_bus(machine)
    # IDE puts the CD-ROM on the secondary master (hdc) as every installer expects.
    cd_index = per_bus.get(cd_bus, 0) + (2 if cd_bus == "ide" else 0)
    cdrom = Disk(type="file", device="cdrom", driver_name="qemu", driver_type="raw")
    cdrom.target_dev, cdrom.target_bus, cdrom.readonly = disk_target(cd_bus, cd_index), cd_bus, True
    cdrom.boot_order = order.get("cdrom")
    if inp.cdrom_path:
        cdrom.source_file = inp.cdrom_path
    devs.add(cdrom)
    devs.add(Controller(type="virtio-serial", index=0))
    for n, nic in enumerate(spec.nics):
        if nic.user:
            iface = user_interface(nic.model, inp.passt)
        elif nic.network:
            iface = Interface(type="network", model=nic.model)
            iface.source_network = nic.network
        else:
            iface = Interface(type="bridge", model=nic.model)
            iface.source_bridge = nic.bridge
        if nic.mac:
            iface.mac_address = nic.mac
        if n == 0:
            iface.boot_order = order.get("nic0")
        devs.add(iface)
    devs.add(Serial(type="pty", target_port=0))
    devs.add(Console(type="pty", target_type="serial", target_port=0))
    for name in (AGENT_CHANNEL, QGA_CHANNEL):
        devs.add(Channel(type="unix", target_type="virtio", target_name=name))
    if spec.spice:
        devs.add(Channel(type="spicevmc", target_type="virtio", target_name=SPICE_CHANNEL))
    if spec.spice and spec.usb_redirection:
        add_usb_redirection(devs)
    devs.add(Input(type="tablet", bus="usb"))
    if spec.tpm:
        devs.add(Tpm(model="tpm-crb", backend_type="emulator", backend_version="2.0"))
    devs.add(vnc_display(inp.vnc_password))
    if spec.spice:
        devs.add(locked_spice(inp.spice_listen))
    # QXL is SPICE's own video device (VGA-compatible, so VNC keeps working).
    devs.add(Video(model_type="qxl" if spec.spice else "vga"))
    devs.memballoon = MemBalloon(model="virtio")
    devs.add(Rng(model="virtio", backend_model="random", backend_path="/dev/urandom"))
    return dom


# ---- the whole create, in the host's worker thread ----------------------------------------

Progress = Callable[..., Any]


def gather_facts(
    conn: libvirt.virConnect, spec: VmSpec, caps: HostCaps, host_paths: bool = False
) -> HostFacts:
    """Read from libvirt what `validate_spec` checks against (only the pools it names).
    `host_paths`: the caller (an admin) may boot a kernel from any host path."""
    info = conn.getInfo()
    pools = {p.name(): p for p in conn.listAllStoragePools()}
    named = {d.pool for d in spec.disks} | ({spec.install.pool} if spec.install.pool else set())
    volumes: dict[str, set[str]] = {}
    for name in named:
        pool = pools.get(name)
        if pool is not None and pool.isActive():
            volumes[name] = set(pool.listVolumes())
    max_vcpus = info[2] if caps.max_vcpus is None else min(info[2], caps.max_vcpus)
    inst = spec.install
    return HostFacts(
        max_vcpus=max_vcpus,
        memory_mib=info[1],
        pools=set(pools),
        networks={n.name() for n in conn.listAllNetworks()},
        uefi=caps.uefi,
        secure_boot=caps.secure_boot,
        tpm=caps.tpm,
        volumes=volumes,
        graphics=caps.graphics,
        boot_volumes=None if host_paths else boot_volumes(conn, inst.kernel, inst.initrd),
    )


def boot_volumes(conn: libvirt.virConnect, *paths: str | None) -> set[str]:
    """Those of `paths` (kernel, initrd) that libvirt knows as volumes of a pool."""
    found = set()
    for path in paths:
        if not path:
            continue
        try:
            conn.storageVolLookupByPath(path)
        except libvirt.libvirtError:
            continue
        found.add(path)
    return found


def _active_pool(conn: libvirt.virConnect, name: str, field_name: str) -> libvirt.virStoragePool:
    pool = conn.storagePoolLookupByName(name)
    if not pool.isActive():
        raise Conflict(f"pool '{name}' is not active", field=field_name)
    return pool


def _volume_format(vol: libvirt.virStorageVol) -> str:
    fmt = Volume.from_xml(vol.XMLDesc(0)).target_format
    # Only image formats QEMU opens as disks; anything else (iso, dir...) is raw bytes.
    return fmt if fmt in ("qcow2", "raw", "qed", "vmdk", "vdi", "vpc") else "raw"


def _new_volume_xml(name: str, size_gib: float) -> str:
    return build_volume_xml(name, int(size_gib * 1024**3), "qcow2")


def plan_disks(
    conn: libvirt.virConnect,
    spec: VmSpec,
    created: list[libvirt.virStorageVol],
    used_paths: dict[str, str],
    progress: Progress | None,
) -> list[DiskPlan]:
    """Resolve existing volumes and create the new ones (appended to `created` as they
    are made, so the caller can remove them if a later step fails)."""
    plans: list[DiskPlan] = []
    if spec.install.kind == "import":
        pool = _active_pool(conn, spec.install.pool or "", "install.pool")
        vol = pool.storageVolLookupByName(spec.install.volume or "")
        refuse_unusable_disk(vol, spec.install.pool or "", used_paths, "install.volume")
        _refuse_foreign_chain(conn, vol, "install.volume")
        plans.append(DiskPlan(vol.path(), _volume_format(vol), "virtio"))
    total = len(spec.disks)
    for i, disk in enumerate(spec.disks):
        pool = _active_pool(conn, disk.pool, f"disks[{i}].pool")
        if disk.volume is not None:
            vol = pool.storageVolLookupByName(disk.volume)
            refuse_unusable_disk(vol, disk.pool, used_paths, f"disks[{i}].volume")
            _refuse_foreign_chain(conn, vol, f"disks[{i}].volume")
        else:
            if progress is not None:
                progress(i, total + 1, f"creating volume {i + 1} of {total}")
            name = disk.name or default_volume_name(spec.name, i)
            _undo_on_interrupt(progress, "delete_volume", pool=disk.pool, volume=name)
            vol = pool.createXML(_new_volume_xml(name, disk.size_gib or 0), 0)
            created.append(vol)
        plans.append(DiskPlan(vol.path(), _volume_format(vol), disk.bus))
    return plans


def _undo_on_interrupt(progress: Progress | None, action: str, **args: str) -> None:
    """Record in the job (when run as one) what to remove should the server die before
    the create ends; see JobProgress.undo_on_interrupt (the host is the job's)."""
    record = getattr(progress, "undo_on_interrupt", None)
    if record is not None:
        record(action, **args)


def _refuse_foreign_chain(
    conn: libvirt.virConnect, vol: libvirt.virStorageVol, field_name: str
) -> None:
    # QEMU follows a qcow2's backing chain with the rights libvirt grants it: a file
    # outside the pools would become readable inside the guest.
    outside = image_probe.foreign_backing(conn, vol)
    if outside:
        raise InvalidInput(
            f"volume {vol.path()} names a backing file outside every storage pool "
            f"({outside}): it cannot be a VM's disk",
            field=field_name,
        )


def is_iso_volume(name: str, fmt: str | None) -> bool:
    """An install disc, by libvirt's format or its name (an upload is stored as raw): the
    web pickers and the refusals below say the same."""
    return fmt == "iso" or name.lower().endswith(".iso")


def refuse_unusable_disk(
    vol: libvirt.virStorageVol, pool: str, used_paths: dict[str, str], field_name: str
) -> None:
    """An existing volume becomes a writable disk only if no VM (the one it would join
    included, when the caller says so through `used_paths`) holds it: QEMU would refuse
    it anyway ("Failed to get 'write' lock"), or two guests would corrupt it. An ISO is
    a CD-ROM's medium, not a disk."""
    name = f"{pool}/{vol.name()}"
    if is_iso_volume(vol.name(), Volume.from_xml(vol.XMLDesc(0)).target_format):
        raise InvalidInput(
            f"volume '{name}' is an ISO image: insert it in a CD-ROM drive instead",
            field=field_name,
        )
    if vol.path() in used_paths:
        raise Conflict(
            f"volume '{name}' is in use by vm '{used_paths[vol.path()]}'", field=field_name
        )


def create_blocking(
    conn: libvirt.virConnect,
    spec: VmSpec,
    domain_type: str,
    caps: HostCaps,
    progress: Progress | None = None,
    created_by: str | None = None,
    spice_listen: str = "127.0.0.1",
    host_paths: bool = False,
) -> dict[str, Any]:
    """Validate, create volumes, define, optionally start. Anything made before a failure
    is removed again, so a failed create leaves no half-made VM behind. `host_paths`:
    see `gather_facts`."""
    validate_spec(spec, gather_facts(conn, spec, caps, host_paths))
    if spec.name in {d.name() for d in conn.listAllDomains()}:
        raise Conflict(f"a vm named '{spec.name}' already exists", field="name")
    created: list[libvirt.virStorageVol] = []
    dom: libvirt.virDomain | None = None
    try:
        # Reading every domain's XML is only needed when existing volumes are reused.
        reuses = spec.install.kind == "import" or any(d.volume for d in spec.disks)
        used = paths_used_by_others(conn, None) if reuses else {}
        disks = plan_disks(conn, spec, created, used, progress)
        cdrom = None
        if spec.install.kind == "iso":
            pool = _active_pool(conn, spec.install.pool or "", "install.pool")
            cdrom = pool.storageVolLookupByName(spec.install.volume or "").path()
        arch = caps.arch or "x86_64"
        xml = build_domain(
            spec,
            BuildInputs(
                domain_type,
                arch,
                disks,
                cdrom,
                created_by=created_by,
                spice_listen=spice_listen,
                passt=caps.passt,
            ),
        )
        if progress is not None:
            progress(len(spec.disks), len(spec.disks) + 1, "defining the domain")
        # Our own UUID, recorded first: a restart after a kill -9 finds this definition.
        xml.uuid = xml.uuid or str(uuid_mod.uuid4())
        _undo_on_interrupt(progress, "undefine_domain", uuid=xml.uuid, name=spec.name)
        dom = conn.defineXML(xml.to_xml())
        if spec.start:
            dom.create()
    except BaseException:
        _rollback(dom, created)
        raise
    if progress is not None:
        progress(len(spec.disks) + 1, len(spec.disks) + 1, "done")
    return {
        "uuid": dom.UUIDString(),
        "name": dom.name(),
        "volumes": [v.path() for v in created],
    }


def undefine_flags(dom: libvirt.virDomain) -> int:
    """Managed save and snapshot metadata always; NVRAM and TPM state only when the domain
    has them (some drivers, like the test driver, refuse flags they do not know)."""
    flags = (
        libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    )
    xml = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    if xml.os.is_uefi or xml.os.nvram:
        flags |= libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    if xml.devices.tpms:
        flags |= libvirt.VIR_DOMAIN_UNDEFINE_TPM
    if _has_checkpoints(dom):
        # Left by backups (services/backups/take.py); without the flag libvirt refuses the undefine.
        flags |= libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    return flags


def _has_checkpoints(dom: libvirt.virDomain) -> bool:
    try:
        return bool(dom.listAllCheckpoints(0))
    except libvirt.libvirtError:
        return False  # a driver without checkpoints


def disk_paths(xml: Domain, cdroms: bool = False) -> list[str]:
    """Source paths of the domain's disks (CD-ROM and floppy media only when asked)."""
    return [
        d.source_path
        for d in xml.devices.disks
        if d.source_path and (cdroms or d.device in (None, "disk", "lun"))
    ]


def disk_volume_path(conn: libvirt.virConnect, disk: Disk) -> str | None:
    """The host path of a disk's medium: its file or device, or the path of the pool
    volume a `type='volume'` disk names (None when that volume does not exist)."""
    if disk.source_path:
        return disk.source_path
    if disk.source_pool and disk.source_volume:
        try:
            pool = conn.storagePoolLookupByName(disk.source_pool)
            return pool.storageVolLookupByName(disk.source_volume).path()
        except libvirt.libvirtError:
            return None
    return None


def paths_used_by_others(conn: libvirt.virConnect, skip_uuid: str | None) -> dict[str, str]:
    """path -> name of another domain on this host using it (live or persistent config),
    CD-ROM media included: an ISO in someone's drive is in use too. Disks naming a pool
    volume (`type='volume'`) count by that volume's path."""
    used: dict[str, str] = {}
    for other, xml in scan.definitions(conn):
        if other.UUIDString() == skip_uuid:
            continue
        for disk in Domain.from_xml(xml).devices.disks:
            if disk.source_path:
                used.setdefault(disk.source_path, other.name())
            elif disk.source_volume and (path := disk_volume_path(conn, disk)):
                used.setdefault(path, other.name())
    return used


def _rollback(dom: libvirt.virDomain | None, created: list[libvirt.virStorageVol]) -> None:
    for step in ([lambda: dom.undefineFlags(undefine_flags(dom))] if dom is not None else []) + [
        (lambda v=v: v.delete(0)) for v in created
    ]:
        try:
            step()
        except libvirt.libvirtError as exc:
            log.warning("cleanup after a failed create: %s", exc)
