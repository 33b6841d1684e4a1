"""The VM create spec and the rules that make it valid on a host.

The spec is a plain pydantic model (no web types) that the REST schema reuses. Pydantic
only checks types here; every rule that names a field (`name`, `disks[0].size_gib`, ...)
is checked by `validate_spec`, so callers of the service get the same `InvalidInput` the
API turns into a 422.

    facts = HostFacts(max_vcpus=8, memory_mib=16384, pools={"default"}, networks={"default"})
    validate_spec(VmSpec(name="web1", disks=[DiskSpec(pool="default", size_gib=20)]), facts)
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from kvmmanager.core.errors import InvalidInput, Unsupported
from kvmmanager.virt.helper_guests import PROBE_PREFIX, is_helper_guest

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
# osinfo-db's ids are URIs ("http://microsoft.com/win/11"); the longest is under 80.
OS_ID_RE = re.compile(r"https?://[A-Za-z0-9._~/:+-]{1,200}")

AGENT_CHANNEL = "org.kvmmanager.agent.0"
QGA_CHANNEL = "org.qemu.guest_agent.0"
# A cloud-init VM's own seed volume is `<vm name>-seed.iso` (services/cloudinit/seed.py).
SEED_SUFFIX = "-seed.iso"


class InstallSource(BaseModel):
    """How the guest gets an OS: `iso` (boot from a CD-ROM volume), `import` (boot an
    existing disk volume), `blank` (empty, CD-ROM for later), `pxe` (boot from the
    network first: needs a NIC) or `kernel` (direct boot)."""

    kind: Literal["iso", "import", "blank", "pxe", "kernel"] = "blank"
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
    """A NIC on a libvirt `network`, a host `bridge`, or `user`-mode networking with the
    passt backend (exactly one of the three; port forwards of a passt NIC are managed
    afterwards, see services/networks/port_forwards.py)."""

    network: str | None = None
    bridge: str | None = None
    user: bool = False
    mac: str | None = None
    model: Literal["virtio", "e1000", "rtl8139"] = "virtio"


class VmSpec(BaseModel):
    name: str
    vcpus: int = 1
    memory_mib: int = 512
    # The most the running VM may grow to without a reboot (vCPU hot-plug, the memory
    # balloon); None: the same as vcpus / memory_mib.
    max_vcpus: int | None = None
    max_memory_mib: int | None = None
    install: InstallSource = Field(default_factory=InstallSource)
    disks: list[DiskSpec] = Field(default_factory=list)
    nics: list[NicSpec] = Field(default_factory=list)
    firmware: Literal["bios", "uefi"] = "bios"
    secure_boot: bool = False
    tpm: bool = False
    # A SPICE display (with a spicevmc channel and QXL video) next to the VNC one, which
    # stays the browser console.
    spice: bool = False
    # Two SPICE USB redirection slots (remote-viewer passes client USB devices through),
    # on a qemu-xhci controller; needs `spice`.
    usb_redirection: bool = False
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    owner: str | None = None
    start: bool = False
    # The guest's OS as osinfo-db names it ("http://debian.org/debian/11"), kept in the
    # domain's libosinfo metadata as virt-manager keeps it.
    os_id: str | None = None


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
    # Graphics types the domain capabilities list; None when the driver reports none.
    graphics: set[str] | None = None
    # The kernel/initrd paths that are volumes of a storage pool; None: any host path
    # may be booted (an admin's create).
    boot_volumes: set[str] | None = None


def validate_name(name: object, field_name: str = "name") -> str:
    if not isinstance(name, str) or not name:
        raise InvalidInput("a name is required", field=field_name)
    if len(name) > NAME_MAX:
        raise InvalidInput(f"name is longer than {NAME_MAX} characters", field=field_name)
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidInput("name contains control characters", field=field_name)
    if not NAME_RE.fullmatch(name):
        # Name the first character that is not allowed: "<script>" is refused for its
        # '<', not for a '/' further on.
        bad = next((c for c in name if not NAME_RE.fullmatch("a" + c)), name[0])
        raise InvalidInput(
            "name must start with a letter or digit and contain only letters, digits, "
            f"'.', '_' and '-' ({bad!r} is not allowed)",
            field=field_name,
        )
    if is_helper_guest(name):
        # The inventory hides such guests and the probe's sweep may remove them.
        raise InvalidInput(
            f"names starting with '{PROBE_PREFIX}' are reserved for the manager's own "
            "helper guests",
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
        # Said as `field=value` so the CLI shows its own flag (cli/flags.py).
        raise InvalidInput(
            f"{field_name}={vcpus} is out of range: it must be between 1 and {max_vcpus}",
            field=field_name,
        )
    return vcpus


def validate_memory(memory_mib: int, host_mib: int, field_name: str = "memory_mib") -> int:
    if not MIN_MEMORY_MIB <= memory_mib <= host_mib:
        raise InvalidInput(
            f"{field_name}={memory_mib} is out of range: it must be between {MIN_MEMORY_MIB} "
            f"and {host_mib} (host memory)",
            field=field_name,
        )
    return memory_mib


def validate_maximum(value: int, maximum: int, what: str, max_field: str) -> None:
    """A hot-add maximum below what the VM is to have now (`value` of field `what`).
    Said as `field=value` so each interface names its own flag or field."""
    if maximum < value:
        raise InvalidInput(
            f"{max_field}={maximum} is less than {what}={value}: the maximum for hot-add "
            f"must be at least what the VM has",
            field=max_field,
        )


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
    if spec.max_vcpus is not None:
        validate_vcpus(spec.max_vcpus, facts.max_vcpus, "max_vcpus")
        validate_maximum(spec.vcpus, spec.max_vcpus, "vcpus", "max_vcpus")
    if spec.max_memory_mib is not None:
        validate_memory(spec.max_memory_mib, facts.memory_mib, "max_memory_mib")
        validate_maximum(spec.memory_mib, spec.max_memory_mib, "memory_mib", "max_memory_mib")
    validate_description(spec.description)
    if spec.os_id is not None and not OS_ID_RE.fullmatch(spec.os_id):
        raise InvalidInput(
            "os_id must be an osinfo-db OS id such as http://debian.org/debian/12",
            field="os_id",
        )
    spec.tags = validate_tags(spec.tags)
    if spec.owner is not None:
        validate_name(spec.owner, "owner")
    inst = spec.install
    if inst.kind in ("iso", "import"):
        _require_volume(facts, inst.pool, inst.volume, "install")
    elif inst.kind == "kernel":
        _validate_path(inst.kernel, "install.kernel", required=True)
        _validate_path(inst.initrd, "install.initrd", required=False)
        for path, what in ((inst.kernel, "kernel"), (inst.initrd, "initrd")):
            # QEMU reads it with root's rights (and libvirt relabels it for the guest):
            # only an admin may name a host file; others boot what is in a pool.
            if path and facts.boot_volumes is not None and path not in facts.boot_volumes:
                raise InvalidInput(
                    f"{path} is not a volume of any storage pool: upload the {what} into a "
                    "pool and give the volume's path",
                    field=f"install.{what}",
                )
        if inst.cmdline is not None and (
            len(inst.cmdline) > MAX_CMDLINE or any(ord(c) < 32 for c in inst.cmdline)
        ):
            raise InvalidInput(
                "cmdline is too long or has control characters", field="install.cmdline"
            )
    if inst.kind == "pxe" and not spec.nics:
        # The firmware's PXE client asks a DHCP server on the NIC's network for a boot file.
        raise InvalidInput(
            "PXE boots from the network: the VM needs a NIC, pick a network", field="nics"
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
        if disk.name is None and len(vol_name) > NAME_MAX:
            # The volume's name comes from the VM's: say so on the field the user typed.
            longest = NAME_MAX - (len(vol_name) - len(spec.name))
            raise InvalidInput(
                f"name is too long for a VM with a new disk: its volume would be named "
                f"'{vol_name}', over {NAME_MAX} characters (at most {longest} for the name)",
                field="name",
            )
        validate_name(vol_name, f"{prefix}.name")
        if vol_name in facts.volumes.get(disk.pool, set()) or (disk.pool, vol_name) in new_names:
            raise InvalidInput(
                f"volume {vol_name!r} already exists in pool {disk.pool!r}", field=f"{prefix}.name"
            )
        new_names.add((disk.pool, vol_name))
    for i, nic in enumerate(spec.nics):
        prefix = f"nics[{i}]"
        if (nic.network is not None) + (nic.bridge is not None) + nic.user != 1:
            raise InvalidInput(
                "give exactly one of network, bridge or user", field=f"{prefix}.network"
            )
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
    if spec.spice and facts.graphics is not None and "spice" not in facts.graphics:
        offered = ", ".join(sorted(facts.graphics)) or "none"
        raise Unsupported(
            f"the host's QEMU has no SPICE support (its domain capabilities offer graphics: "
            f"{offered})",
            field="spice",
        )
    if spec.usb_redirection and not spec.spice:
        raise InvalidInput(
            "USB redirection goes through a SPICE client: enable spice too",
            field="usb_redirection",
        )
    if spec.tpm and not facts.tpm:
        raise Unsupported("the host's domain capabilities offer no emulated TPM", field="tpm")
    return spec


def default_volume_name(vm_name: str, index: int) -> str:
    return f"{vm_name}.qcow2" if index == 0 else f"{vm_name}-{index}.qcow2"


def generate_vnc_password() -> str:
    # QEMU's VNC authentication (DES) only uses the first 8 characters.
    return secrets.token_urlsafe(6)[:8]
