"""VM creation spec, its validation against a host, and spec -> domain XML.

The spec is a plain pydantic model (no web types) that the REST schema reuses. Pydantic
only checks types here; every rule that names a field (`name`, `disks[0].size_gib`, ...)
is checked by `validate_spec` so callers of the service get the same `InvalidInput` the
API turns into a 422. The XML is always built through `kvmmanager.virt.xml` models.

    facts = HostFacts(max_vcpus=8, memory_mib=16384, pools={"default"}, networks={"default"})
    validate_spec(spec, facts)
    xml = build_domain(spec, BuildInputs(domain_type="qemu", disks=[...])).to_xml()
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import libvirt
from pydantic import BaseModel, Field

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound, Unsupported
from kvmmanager.virt.xml.devices import (
    Channel,
    Console,
    Controller,
    Disk,
    Graphics,
    Input,
    Interface,
    MemBalloon,
    Rng,
    Serial,
    Tpm,
    Video,
)
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.volume import Volume

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_MAX = 64
TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=-]*")
MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
BRIDGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,14}")
MIN_MEMORY_MIB = 16
# A single new disk above this is a typo, not a plan (64 TiB).
MAX_DISK_GIB = 65536
MAX_DESCRIPTION = 4096
MAX_CMDLINE = 4096

AGENT_CHANNEL = "org.kvmmanager.agent.0"
QGA_CHANNEL = "org.qemu.guest_agent.0"


class InstallSource(BaseModel):
    """How the guest gets an OS: `iso` (boot from a CD-ROM volume), `import` (boot an
    existing disk volume), `blank` (empty, CD-ROM for later) or `kernel` (direct boot)."""

    kind: Literal["iso", "import", "blank", "kernel"] = "blank"
    pool: str | None = None
    volume: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None


class DiskSpec(BaseModel):
    """A new qcow2 volume (`size_gib`, optional `name`) or an existing `volume` in `pool`."""

    pool: str
    size_gib: float | None = None
    volume: str | None = None
    name: str | None = None
    bus: Literal["virtio", "sata", "scsi"] = "virtio"


class NicSpec(BaseModel):
    """A NIC on a libvirt `network` or a host `bridge` (exactly one of the two)."""

    network: str | None = None
    bridge: str | None = None
    mac: str | None = None
    model: Literal["virtio", "e1000", "rtl8139"] = "virtio"


class VmSpec(BaseModel):
    name: str
    vcpus: int = 1
    memory_mib: int = 512
    install: InstallSource = Field(default_factory=InstallSource)
    disks: list[DiskSpec] = Field(default_factory=list)
    nics: list[NicSpec] = Field(default_factory=list)
    firmware: Literal["bios", "uefi"] = "bios"
    secure_boot: bool = False
    tpm: bool = False
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    owner: str | None = None
    start: bool = False


@dataclass
class HostFacts:
    """What validation needs to know about the target host, read once per create."""

    max_vcpus: int
    memory_mib: int
    pools: set[str]
    networks: set[str]
    uefi: bool = False
    secure_boot: bool = False
    tpm: bool = False
    volumes: dict[str, set[str]] = field(default_factory=dict)


def validate_name(name: object, field_name: str = "name") -> str:
    if not isinstance(name, str) or not name:
        raise InvalidInput("a name is required", field=field_name)
    if len(name) > NAME_MAX:
        raise InvalidInput(f"name is longer than {NAME_MAX} characters", field=field_name)
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidInput("name contains control characters", field=field_name)
    if "/" in name:
        raise InvalidInput("name must not contain '/'", field=field_name)
    if not NAME_RE.fullmatch(name):
        raise InvalidInput(
            "name must start with a letter or digit and contain only letters, digits, "
            "'.', '_' and '-'",
            field=field_name,
        )
    return name


def validate_tags(tags: list[str], field_name: str = "tags") -> list[str]:
    for i, tag in enumerate(tags):
        if not tag or len(tag) > NAME_MAX or not TAG_RE.fullmatch(tag):
            raise InvalidInput(f"invalid tag {tag!r}", field=f"{field_name}[{i}]")
    return list(dict.fromkeys(tags))


def validate_description(text: str | None, field_name: str = "description") -> str | None:
    if text is None:
        return None
    if len(text) > MAX_DESCRIPTION:
        raise InvalidInput(f"longer than {MAX_DESCRIPTION} characters", field=field_name)
    if any((ord(c) < 32 and c not in "\n\t") or ord(c) == 127 for c in text):
        raise InvalidInput("contains control characters", field=field_name)
    return text


def validate_vcpus(vcpus: int, max_vcpus: int, field_name: str = "vcpus") -> int:
    if not 1 <= vcpus <= max_vcpus:
        raise InvalidInput(f"vcpus must be between 1 and {max_vcpus}", field=field_name)
    return vcpus


def validate_memory(memory_mib: int, host_mib: int, field_name: str = "memory_mib") -> int:
    if not MIN_MEMORY_MIB <= memory_mib <= host_mib:
        raise InvalidInput(
            f"memory_mib must be between {MIN_MEMORY_MIB} and {host_mib} (host memory)",
            field=field_name,
        )
    return memory_mib


def validate_mac(mac: str | None, field_name: str) -> str | None:
    if mac is None:
        return None
    mac = mac.lower()
    if not MAC_RE.fullmatch(mac):
        raise InvalidInput("MAC address must look like 52:54:00:12:34:56", field=field_name)
    if int(mac[:2], 16) & 1:
        raise InvalidInput("MAC address must be unicast", field=field_name)
    return mac


def _validate_path(path: str | None, field_name: str, required: bool) -> None:
    if path is None:
        if required:
            raise InvalidInput("a path is required", field=field_name)
        return
    if not path.startswith("/") or any(ord(c) < 32 for c in path) or "/../" in path + "/":
        raise InvalidInput("must be an absolute path without control characters", field=field_name)


def _require_volume(facts: HostFacts, pool: str | None, vol: str | None, prefix: str) -> None:
    if not pool:
        raise InvalidInput("a pool is required", field=f"{prefix}.pool")
    if pool not in facts.pools:
        raise InvalidInput(f"unknown pool {pool!r}", field=f"{prefix}.pool")
    if not vol:
        raise InvalidInput("a volume is required", field=f"{prefix}.volume")
    if vol not in facts.volumes.get(pool, set()):
        raise InvalidInput(f"unknown volume {vol!r} in pool {pool!r}", field=f"{prefix}.volume")


def validate_spec(spec: VmSpec, facts: HostFacts) -> VmSpec:
    """Check every rule of a create request against the host; raise naming the field."""
    validate_name(spec.name)
    validate_vcpus(spec.vcpus, facts.max_vcpus)
    validate_memory(spec.memory_mib, facts.memory_mib)
    validate_description(spec.description)
    spec.tags = validate_tags(spec.tags)
    if spec.owner is not None:
        validate_name(spec.owner, "owner")
    inst = spec.install
    if inst.kind in ("iso", "import"):
        _require_volume(facts, inst.pool, inst.volume, "install")
    elif inst.kind == "kernel":
        _validate_path(inst.kernel, "install.kernel", required=True)
        _validate_path(inst.initrd, "install.initrd", required=False)
        if inst.cmdline is not None and (
            len(inst.cmdline) > MAX_CMDLINE or any(ord(c) < 32 for c in inst.cmdline)
        ):
            raise InvalidInput(
                "cmdline is too long or has control characters", field="install.cmdline"
            )
    new_names: set[tuple[str, str]] = set()
    for i, disk in enumerate(spec.disks):
        prefix = f"disks[{i}]"
        if disk.pool not in facts.pools:
            raise InvalidInput(f"unknown pool {disk.pool!r}", field=f"{prefix}.pool")
        if disk.volume is not None:
            if disk.size_gib is not None:
                raise InvalidInput("give either size_gib or volume", field=f"{prefix}.size_gib")
            _require_volume(facts, disk.pool, disk.volume, prefix)
            continue
        if disk.size_gib is None or not 0 < disk.size_gib <= MAX_DISK_GIB:
            raise InvalidInput(
                f"size_gib must be > 0 and <= {MAX_DISK_GIB}", field=f"{prefix}.size_gib"
            )
        vol_name = disk.name or default_volume_name(spec.name, i)
        validate_name(vol_name, f"{prefix}.name")
        if vol_name in facts.volumes.get(disk.pool, set()) or (disk.pool, vol_name) in new_names:
            raise InvalidInput(
                f"volume {vol_name!r} already exists in pool {disk.pool!r}", field=f"{prefix}.name"
            )
        new_names.add((disk.pool, vol_name))
    for i, nic in enumerate(spec.nics):
        prefix = f"nics[{i}]"
        if (nic.network is None) == (nic.bridge is None):
            raise InvalidInput("give exactly one of network or bridge", field=f"{prefix}.network")
        if nic.network is not None and nic.network not in facts.networks:
            raise InvalidInput(f"unknown network {nic.network!r}", field=f"{prefix}.network")
        if nic.bridge is not None and not BRIDGE_RE.fullmatch(nic.bridge):
            raise InvalidInput("invalid bridge name", field=f"{prefix}.bridge")
        nic.mac = validate_mac(nic.mac, f"{prefix}.mac")
    if spec.firmware == "uefi" and not facts.uefi:
        raise Unsupported("the host's domain capabilities offer no UEFI firmware", field="firmware")
    if spec.secure_boot and spec.firmware != "uefi":
        raise InvalidInput("secure boot needs firmware 'uefi'", field="secure_boot")
    if spec.secure_boot and not facts.secure_boot:
        raise Unsupported("the host's UEFI firmware offers no secure boot", field="secure_boot")
    if spec.tpm and not facts.tpm:
        raise Unsupported("the host's domain capabilities offer no emulated TPM", field="tpm")
    return spec


def default_volume_name(vm_name: str, index: int) -> str:
    return f"{vm_name}.qcow2" if index == 0 else f"{vm_name}-{index}.qcow2"


def generate_vnc_password() -> str:
    # QEMU's VNC authentication (DES) only uses the first 8 characters.
    return secrets.token_urlsafe(6)[:8]


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


def build_domain(spec: VmSpec, inp: BuildInputs) -> Domain:
    """A complete, persistent-ready domain for `spec`; only the models write XML."""
    kib = spec.memory_mib * 1024
    dom = Domain(
        type=inp.domain_type, name=spec.name, memory=kib, current_memory=kib, vcpus=spec.vcpus
    )
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
    elif inst.kind == "iso":
        dom.os.boot_devices = ["cdrom", "hd"]
    else:
        dom.os.boot_devices = ["hd", "cdrom"]
    dom.features.acpi = True
    dom.features.apic = True
    if spec.secure_boot:
        dom.features.smm = True
    if inp.domain_type == "kvm":
        dom.cpu_mode = "host-passthrough"
    dom.clock_offset = "utc"
    dom.on_poweroff, dom.on_reboot, dom.on_crash = "destroy", "restart", "destroy"

    devs = dom.devices
    per_bus: dict[str, int] = {}
    for plan in inp.disks:
        idx = per_bus.get(plan.bus, 0)
        per_bus[plan.bus] = idx + 1
        devs.add(
            Disk(
                type="file", device="disk", driver_name="qemu", driver_type=plan.format,
                source_file=plan.path, target_dev=disk_target(plan.bus, idx),
                target_bus=plan.bus,
            )
        )  # fmt: skip
    cd_bus = cdrom_bus(machine)
    # IDE puts the CD-ROM on the secondary master (hdc) as every installer expects.
    cd_index = per_bus.get(cd_bus, 0) + (2 if cd_bus == "ide" else 0)
    cdrom = Disk(type="file", device="cdrom", driver_name="qemu", driver_type="raw")
    cdrom.target_dev, cdrom.target_bus, cdrom.readonly = disk_target(cd_bus, cd_index), cd_bus, True
    if inp.cdrom_path:
        cdrom.source_file = inp.cdrom_path
    devs.add(cdrom)
    devs.add(Controller(type="virtio-serial", index=0))
    for nic in spec.nics:
        iface = Interface(type="network" if nic.network else "bridge", model=nic.model)
        if nic.network:
            iface.source_network = nic.network
        else:
            iface.source_bridge = nic.bridge
        if nic.mac:
            iface.mac_address = nic.mac
        devs.add(iface)
    devs.add(Serial(type="pty", target_port=0))
    devs.add(Console(type="pty", target_type="serial", target_port=0))
    for name in (AGENT_CHANNEL, QGA_CHANNEL):
        devs.add(Channel(type="unix", target_type="virtio", target_name=name))
    devs.add(Input(type="tablet", bus="usb"))
    if spec.tpm:
        devs.add(Tpm(model="tpm-crb", backend_type="emulator", backend_version="2.0"))
    devs.add(
        Graphics(type="vnc", port=-1, autoport=True, listen_address="127.0.0.1",
                 passwd=inp.vnc_password)
    )  # fmt: skip
    devs.add(Video(model_type="vga"))
    devs.memballoon = MemBalloon(model="virtio")
    devs.add(Rng(model="virtio", backend_model="random", backend_path="/dev/urandom"))
    return dom


# ---- the whole create, in the host's worker thread ----------------------------------------

Progress = Callable[..., Any]


def gather_facts(conn: libvirt.virConnect, spec: VmSpec, caps: HostCaps) -> HostFacts:
    """Read from libvirt what `validate_spec` checks against (only the pools it names)."""
    info = conn.getInfo()
    pools = {p.name(): p for p in conn.listAllStoragePools()}
    named = {d.pool for d in spec.disks} | ({spec.install.pool} if spec.install.pool else set())
    volumes: dict[str, set[str]] = {}
    for name in named:
        pool = pools.get(name)
        if pool is not None and pool.isActive():
            volumes[name] = set(pool.listVolumes())
    max_vcpus = info[2] if caps.max_vcpus is None else min(info[2], caps.max_vcpus)
    return HostFacts(
        max_vcpus=max_vcpus,
        memory_mib=info[1],
        pools=set(pools),
        networks={n.name() for n in conn.listAllNetworks()},
        uefi=caps.uefi,
        secure_boot=caps.secure_boot,
        tpm=caps.tpm,
        volumes=volumes,
    )


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
    vol = Volume(name=name, capacity=int(size_gib * 1024**3), target_format="qcow2")
    return vol.to_xml()


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
        _refuse_shared(vol.path(), used_paths, "install.volume")
        plans.append(DiskPlan(vol.path(), _volume_format(vol), "virtio"))
    total = len(spec.disks)
    for i, disk in enumerate(spec.disks):
        pool = _active_pool(conn, disk.pool, f"disks[{i}].pool")
        if disk.volume is not None:
            vol = pool.storageVolLookupByName(disk.volume)
            _refuse_shared(vol.path(), used_paths, f"disks[{i}].volume")
        else:
            if progress is not None:
                progress(i, total + 1, f"creating volume {i + 1} of {total}")
            name = disk.name or default_volume_name(spec.name, i)
            vol = pool.createXML(_new_volume_xml(name, disk.size_gib or 0), 0)
            created.append(vol)
        plans.append(DiskPlan(vol.path(), _volume_format(vol), disk.bus))
    return plans


def _refuse_shared(path: str, used_paths: dict[str, str], field_name: str) -> None:
    if path in used_paths:
        raise Conflict(f"volume {path} is used by vm '{used_paths[path]}'", field=field_name)


def create_blocking(
    conn: libvirt.virConnect,
    spec: VmSpec,
    domain_type: str,
    caps: HostCaps,
    progress: Progress | None = None,
    created_by: str | None = None,
) -> dict[str, Any]:
    """Validate, create volumes, define, optionally start. Anything made before a failure
    is removed again, so a failed create leaves no half-made VM behind."""
    validate_spec(spec, gather_facts(conn, spec, caps))
    if spec.name in {d.name() for d in conn.listAllDomains()}:
        raise Conflict(f"a vm named '{spec.name}' already exists", field="name")
    created: list[libvirt.virStorageVol] = []
    dom: libvirt.virDomain | None = None
    try:
        used = paths_used_by_others(conn, None)
        disks = plan_disks(conn, spec, created, used, progress)
        cdrom = None
        if spec.install.kind == "iso":
            pool = _active_pool(conn, spec.install.pool or "", "install.pool")
            cdrom = pool.storageVolLookupByName(spec.install.volume or "").path()
        arch = caps.arch or "x86_64"
        xml = build_domain(
            spec, BuildInputs(domain_type, arch, disks, cdrom, created_by=created_by)
        )
        if progress is not None:
            progress(len(spec.disks), len(spec.disks) + 1, "defining the domain")
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
    return flags


def disk_paths(xml: Domain, cdroms: bool = False) -> list[str]:
    """Source paths of the domain's disks (CD-ROM and floppy media only when asked)."""
    return [
        d.source_path
        for d in xml.devices.disks
        if d.source_path and (cdroms or d.device in (None, "disk", "lun"))
    ]


def paths_used_by_others(conn: libvirt.virConnect, skip_uuid: str | None) -> dict[str, str]:
    """path -> name of another domain on this host using it (live or persistent config),
    CD-ROM media included: an ISO in someone's drive is in use too."""
    used: dict[str, str] = {}
    for other in conn.listAllDomains():
        if other.UUIDString() == skip_uuid:
            continue
        flags = [0] + ([libvirt.VIR_DOMAIN_XML_INACTIVE] if other.isPersistent() else [])
        for f in flags:
            for path in disk_paths(Domain.from_xml(other.XMLDesc(f)), cdroms=True):
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
