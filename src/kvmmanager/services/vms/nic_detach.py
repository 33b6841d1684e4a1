"""Detaching a NIC: from the running guest (a hot-unplug the guest must agree to) and from
the persistent definition, each only where the NIC is, and answered in the interface's
words rather than libvirt's.

A guest that does not answer the unplug request (no OS yet, no ACPI hotplug) keeps the
NIC after libvirt has waited for it: libvirt then returns success although the NIC is still
there, so the live definition is read again to tell what really happened. A second detach
of such a NIC found it gone from the persistent definition and passed libvirt's "device
not found: no device found at address ..." to the user (issue 17's independent try)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import libvirt

from kvmmanager.core.errors import Conflict, NotFound
from kvmmanager.virt.xml.devices import Interface
from kvmmanager.virt.xml.domain import Domain

log = logging.getLogger(__name__)

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE


@dataclass(frozen=True, slots=True)
class NicDetached:
    applied_live: bool
    next_boot: bool
    message: str


def describe(nic: Interface) -> str:
    """The NIC as the attach call named it: network, bridge or user-mode (its backend)."""
    if nic.type == "user":
        return f"user-mode ({nic.backend_type or 'slirp'})"
    if nic.source_network:
        return f"network '{nic.source_network}'"
    if nic.source_bridge:
        return f"bridge '{nic.source_bridge}'"
    return nic.type or "interface"


def _why(exc: libvirt.libvirtError) -> str:
    text = exc.get_error_message() or ""
    if "does not support hotplug" in text:
        return "this VM's PCI bus does not support hot-unplug"
    if "in progress" in text or "already" in text:
        return "an earlier unplug of it is still waiting for the guest"
    return "QEMU refused the unplug"


def _find(dom: libvirt.virDomain, flags: int, mac: str) -> Interface | None:
    return Domain.from_xml(dom.XMLDesc(flags)).devices.interface_by_mac(mac)


def detach_nic_blocking(
    dom: libvirt.virDomain, mac: str, forget: Callable[[], object]
) -> NicDetached:
    """Unplug NIC `mac` from the running guest, then `forget()` it in the persistent
    definition (the caller redefines it: the test driver has no device API)."""
    running = bool(dom.isActive())
    live = _find(dom, 0, mac) if running else None
    saved = _find(dom, libvirt.VIR_DOMAIN_XML_INACTIVE, mac) if dom.isPersistent() else None
    nic = live or saved
    if nic is None:
        raise NotFound(f"vm '{dom.name()}' has no NIC with MAC {mac}", field="mac")
    what = f"NIC {mac} ({describe(nic)})"
    if live is not None:
        try:
            dom.detachDeviceFlags(live.to_xml(), LIVE)
        except libvirt.libvirtError as exc:
            # Nothing changed yet: the saved definition is only touched after this.
            log.info("live detach of %s from %s refused: %s", mac, dom.name(), exc)
            raise Conflict(
                f"the {what} cannot be unplugged from the running VM now: {_why(exc)}; "
                "shut the VM down and detach it then",
                field="mac",
            ) from None
    if saved is not None:
        forget()
    if live is None:
        return NicDetached(False, True, f"{what} removed; the VM is shut off")
    if _find(dom, 0, mac) is None:
        kept = " and from the VM's definition" if saved is not None else ""
        return NicDetached(True, False, f"{what} unplugged now{kept}")
    later = "it is gone at the next boot" if saved is not None else "it stays until the VM stops"
    return NicDetached(
        False,
        saved is not None,
        f"unplug of the {what} requested; the guest has not released it yet (a guest "
        f"without an OS or ACPI hotplug support keeps it); {later}",
    )
