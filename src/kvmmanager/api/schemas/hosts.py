"""REST shapes of hosts (libvirt connections) and what they offer."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

HostStatus = Literal[
    "disconnected", "connecting", "connected", "not responding", "reconnecting", "failed"
]


class HostCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Lengths only here; the service checks the exact rules and names the field.
    name: str = Field(max_length=256, examples=["kvm2"])
    uri: str = Field(max_length=4096, examples=["qemu+ssh://root@kvm2.example.org/system"])


class HostOut(BaseModel):
    name: str
    uri: str
    status: HostStatus
    reason: str
    since: float = Field(description="Unix time of the last status change")
    stale_since: float | None = Field(
        None,
        description="While the host is not connected: Unix time its VMs' state was last "
        "known to match libvirt (the VM list shows older state from then on)",
    )
    overdue_calls: int = Field(
        0, description="libvirt calls past their deadline still holding a worker of the host"
    )
    next_attempt_at: float | None = Field(
        None,
        description="While the host is not connected: Unix time of the next connection "
        "attempt (each host waits its own jittered time, so hosts dropped together do not "
        "all retry together)",
    )
    created_at: datetime | None = None
    vm_count: int


class AccelOut(BaseModel):
    accel: Literal["kvm", "tcg"]
    domain_type: Literal["kvm", "qemu"]
    reason: str
    source: Literal["probe", "config", "last known"]


class CpuOut(BaseModel):
    model: str
    count: int
    mhz: int
    numa_nodes: int
    sockets: int
    cores: int
    threads: int


class HostInfoOut(BaseModel):
    name: str
    hostname: str | None
    uri: str
    driver: str
    libvirt_version: str
    hypervisor_version: str | None
    cpu: CpuOut
    memory_mib: int
    memory_stats_kib: dict[str, int] | None
    cpu_stats_ns: dict[str, int] | None
    accel: AccelOut


class GuestCapsOut(BaseModel):
    os_type: str | None
    arch: str | None
    domain_types: list[str]
    machines: list[str]


class CapabilitiesOut(BaseModel):
    host: dict[str, Any]
    guests: list[GuestCapsOut]


class DomainCapabilitiesOut(BaseModel):
    domain_type: str | None
    arch: str | None
    machine: str | None
    emulator: str | None
    vcpu_max: int | None
    firmware: dict[str, Any]
    tpm: dict[str, Any]
    disk: dict[str, list[str]]
    graphics_types: list[str]
    video_models: list[str]
    cpu_modes: list[str]
    virtio_serial: bool | None
