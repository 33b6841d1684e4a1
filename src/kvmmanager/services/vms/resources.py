"""A resources form's edit (vCPUs, memory and their maximums): only what differs from
what the VM has, so a value or maximum left as the form showed it changes nothing."""

from __future__ import annotations

from dataclasses import dataclass

from kvmmanager.virt.inventory import DomainInfo


@dataclass(frozen=True)
class ResourceEdit:
    """What to change; None leaves it as it is."""

    vcpus: int | None = None
    max_vcpus: int | None = None
    memory_mib: int | None = None
    max_memory_mib: int | None = None

    @property
    def cpu(self) -> bool:
        return self.vcpus is not None or self.max_vcpus is not None

    @property
    def memory(self) -> bool:
        return self.memory_mib is not None or self.max_memory_mib is not None


def resource_edit(
    info: DomainInfo,
    vcpus: int,
    memory_mib: int,
    max_vcpus: int | None = None,
    max_memory_mib: int | None = None,
) -> ResourceEdit:
    """The edit a form showing `info` asks for (a maximum not given is no edit; the form
    shows a VM without a maximum as its current value)."""
    shown_max_vcpus = info.max_vcpus or info.vcpus
    shown_max_mib = (info.max_memory_kib or info.memory_kib) // 1024
    return ResourceEdit(
        vcpus=vcpus if vcpus != info.vcpus else None,
        max_vcpus=max_vcpus if max_vcpus not in (None, shown_max_vcpus) else None,
        memory_mib=memory_mib if memory_mib != info.memory_kib // 1024 else None,
        max_memory_mib=max_memory_mib if max_memory_mib not in (None, shown_max_mib) else None,
    )
