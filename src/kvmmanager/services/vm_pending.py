"""Changes that wait for the next boot: the VM's saved configuration differs from what it
runs with (vCPUs or memory raised beyond what the running guest takes), as Proxmox marks
pending changes. Pages show both values and say that a shutdown applies them.

    pending = await pending_changes(manager.vms, "local", "web1")
    if pending.any: ...  # pending.vcpus / pending.memory_kib are the next-boot values
"""

from __future__ import annotations

from dataclasses import dataclass

import libvirt

from kvmmanager.services.vms import VmService
from kvmmanager.virt.xml.domain import Domain


@dataclass(frozen=True)
class PendingChanges:
    """Next-boot values that differ from the running ones (None: nothing pending)."""

    vcpus: int | None = None
    memory_kib: int | None = None

    @property
    def any(self) -> bool:
        return self.vcpus is not None or self.memory_kib is not None


def _pending(dom: libvirt.virDomain) -> PendingChanges:
    if not dom.isActive() or not dom.isPersistent():
        return PendingChanges()  # a stopped VM boots with its config; a transient has none
    live = Domain.from_xml(dom.XMLDesc(0))
    config = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    vcpus = config.online_vcpus
    memory = config.current_memory or config.memory
    live_memory = live.current_memory or live.memory
    return PendingChanges(
        vcpus=vcpus if vcpus != live.online_vcpus else None,
        memory_kib=memory if memory != live_memory else None,
    )


async def pending_changes(vms: VmService, host: str, vm: str) -> PendingChanges:
    return await vms.run_on(host, vm, _pending, kind="read")
