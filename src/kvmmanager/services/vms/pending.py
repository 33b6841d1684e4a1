"""Changes that wait for the next boot: the VM's saved configuration differs from what it
runs with (vCPUs or memory raised beyond what the running guest takes), as Proxmox marks
pending changes. Pages show both values and say that a shutdown applies them.

    pending = await pending_changes(manager.vms, "local", "web1")
    if pending.any: ...  # pending.vcpus / pending.memory_kib are the next-boot values
"""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

from kvmmanager.services.vms.service import VmService
from kvmmanager.virt.xml.domain import Domain


@dataclass(frozen=True)
class PendingChanges:
    """Next-boot values that differ from the running ones (None: nothing pending)."""

    vcpus: int | None = None
    memory_kib: int | None = None
    max_vcpus: int | None = None
    max_memory_kib: int | None = None
    # The configured size when the guest has another one within its maximum: a balloon
    # target not reached (no balloon driver). Not pending a reboot; forms show it.
    balloon_target_kib: int | None = None

    @property
    def any(self) -> bool:
        values = (self.vcpus, self.memory_kib, self.max_vcpus, self.max_memory_kib)
        return any(v is not None for v in values)


def _changed(config: int | None, live: int | None) -> int | None:
    return config if config is not None and config != live else None


def _pending(dom: libvirt.virDomain) -> PendingChanges:
    if not dom.isActive() or not dom.isPersistent():
        return PendingChanges()  # a stopped VM boots with its config; a transient has none
    live = Domain.from_xml(dom.XMLDesc(0))
    config = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    memory = config.current_memory or config.memory
    # A memory size within what the guest booted with is a balloon target, set live: it
    # is not pending a reboot. Comparing it with the guest's actual size kept "memory
    # 2.0 GiB -> 512 MiB ... shut down and start again" forever in a guest without a
    # balloon driver (QEMU boots with <memory>, the maximum, and only a balloon driver
    # gives the difference back; a restart changes nothing). Only a size above the
    # running maximum waits for the next boot (issue 15).
    live_max = live.memory or 0
    return PendingChanges(
        vcpus=_changed(config.online_vcpus, live.online_vcpus),
        memory_kib=memory if memory is not None and memory > live_max else None,
        max_vcpus=_changed(config.vcpus, live.vcpus),
        max_memory_kib=_changed(config.memory, live.memory),
        balloon_target_kib=_changed(memory, live.current_memory or live_max),
    )


async def pending_changes(vms: VmService, host: str, vm: str) -> PendingChanges:
    return await vms.run_on(host, vm, _pending, kind="read")
