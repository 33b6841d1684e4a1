"""What a VM list across hosts cannot show by its rows alone: the hosts whose VMs are
missing from it (never listed since the manager started: their daemon froze or failed
before the first inventory) or shown as of an older listing (the host stopped answering
since). Without this, a list that lacks a host's VMs reads as "that host has no VMs"."""

from __future__ import annotations

from dataclasses import dataclass

from kvmmanager.virt.registry import HostRegistry


@dataclass(frozen=True)
class HostGap:
    host: str
    status: str
    reason: str
    # Never listed: none of its VMs is in the list (they are unknown, not absent).
    missing: bool
    # Listed before: its rows are as of this time (epoch seconds), libvirt's last answer.
    stale_since: float | None


def host_gaps(registry: HostRegistry, host: str | None = None) -> list[HostGap]:
    """The hosts (all, or `host`) whose VMs the inventory does not hold as of now."""
    gaps = []
    for hc in registry.all():
        if host is not None and hc.name != host:
            continue
        if hc.never_listed:
            gaps.append(HostGap(hc.name, hc.status, hc.status_reason, True, None))
        elif hc.stale_since is not None:
            gaps.append(HostGap(hc.name, hc.status, hc.status_reason, False, hc.stale_since))
    return gaps
