"""Request and response bodies of the VM routes. Create/attach bodies reuse the service's
own specs (kvmmanager.services.vms.spec) so the API and the service agree by construction."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from kvmmanager.services.vms.spec import DiskSpec, NicSpec, VmSpec


class VmCreate(VmSpec):
    """A new VM. `max_vcpus`/`max_memory_mib`: the most it may grow to while running
    (vCPU hot-plug, memory balloon); default: what it starts with. `install.kind`: `iso`
    (pool+volume in the CD-ROM, boot from it), `import`
    (boot an existing disk volume), `blank`, or `kernel` (direct boot: kernel, initrd,
    cmdline). `disks`: new qcow2 volumes (`pool` + `size_gib`) or existing ones (`pool` +
    `volume`). `nics`: a libvirt `network` or a host `bridge`. `start`: boot it at once."""


class DiskAttach(DiskSpec):
    """A disk to attach: a new qcow2 volume (`size_gib`, optional `name`) or `volume`."""


class NicAttach(NicSpec):
    """A NIC to attach; a MAC is generated when none is given."""


class MediaInsert(BaseModel):
    pool: str
    volume: str
    target: str | None = Field(None, description="CD-ROM target (hdc, sda...); default: first")


class ShutdownBody(BaseModel):
    mode: Literal["acpi", "agent", "auto"] = Field(
        "auto", description="auto: the guest agent when connected, else the ACPI power button"
    )


class VmPatch(BaseModel):
    """Fields to change; omitted ones stay as they are. `name` renames (VM must be shut off)."""

    name: str | None = None
    description: str | None = None
    tags: list[str] | None = None
    autostart: bool | None = None
    vcpus: int | None = None
    memory_mib: int | None = None
    max_vcpus: int | None = Field(
        None, description="most vCPUs hot-plug may give the VM (from its next boot if running)"
    )
    max_memory_mib: int | None = Field(
        None, description="most memory the balloon may give the VM (from its next boot if running)"
    )


class OsOut(BaseModel):
    type: str = ""
    arch: str = ""
    machine: str = ""
    firmware: str = "bios"


class GraphicsOut(BaseModel):
    type: str
    port: int | None = None
    listen: str | None = None


class DiskOut(BaseModel):
    target: str
    device: str = "disk"
    source: str | None = None
    pool: str | None = None
    volume: str | None = None
    format: str | None = None
    bus: str | None = None
    readonly: bool = False


class NicOut(BaseModel):
    mac: str | None
    type: str
    source: str | None = None
    model: str | None = None


class ChannelOut(BaseModel):
    name: str
    type: str
    state: str | None = None


class VmOut(BaseModel):
    host: str
    name: str
    uuid: str
    id: int | None = None
    state: str
    state_reason: str = ""
    persistent: bool = True
    autostart: bool = False
    vcpus: int = 0
    max_vcpus: int = 0
    memory_kib: int = 0
    max_memory_kib: int = 0
    title: str = ""
    description: str = ""
    tags: list[str] = []
    owner: str | None = None
    os: OsOut = OsOut()
    graphics: list[GraphicsOut] = []
    disks: list[DiskOut] = []
    nics: list[NicOut] = []
    channels: list[ChannelOut] = []
    agent_status: str = "absent"
    qga_status: str = "absent"
    updated_at: float = 0.0


class HostGapOut(BaseModel):
    host: str
    status: str = Field(description="the host's connection status")
    reason: str = ""
    missing: bool = Field(
        description="never listed since the manager started: none of its VMs is in `vms` "
        "(they are unknown, not absent)"
    )
    stale_since: float | None = Field(
        None, description="listed before: its VMs are shown as of this time (epoch seconds)"
    )


class VmList(BaseModel):
    """Every VM of every host the inventory holds, and the hosts it cannot vouch for."""

    vms: list[VmOut]
    hosts_not_current: list[HostGapOut] = Field(
        description="hosts whose VMs are missing from `vms` or shown as of an older "
        "listing; empty when the list is complete and current"
    )


class VmCreated(BaseModel):
    vm: VmOut
    domain_type: Literal["kvm", "qemu", "test"] = Field(
        description="kvm when the host's KVM works, else qemu (TCG emulation)"
    )
    accel_reason: str = ""
    volumes: list[str] = Field(default_factory=list, description="volumes created for it")


class VmActionOut(BaseModel):
    host: str
    name: str
    uuid: str
    state: str
    message: str = ""
    details: dict[str, Any] = {}


class EditOut(BaseModel):
    applied_live: bool = Field(description="the running guest has the change now")
    next_boot: bool = Field(description="(part of) the change takes effect at the next boot")
    message: str
    details: dict[str, Any] = {}


class VmPatchOut(BaseModel):
    vm: VmActionOut
    edits: dict[str, EditOut] = Field(default_factory=dict, description="vcpus/memory_mib results")


class KeptVolume(BaseModel):
    path: str
    reason: str


class VmDeleted(BaseModel):
    host: str
    name: str
    uuid: str
    deleted_volumes: list[str] = []
    kept_volumes: list[KeptVolume] = []


class VmXml(BaseModel):
    xml: str


class VmAddress(BaseModel):
    ip: str = Field(description="CIDR as the source reports it")
    interface: str
    mac: str | None
    source: Literal["agent", "qemu-ga", "dhcp"]
