"""Guests the manager makes for itself, never a user's VM.

The accelerator probe (virt/probe.py) runs short-lived transient guests on a host. They
are libvirt domains like any other, so the inventory would list them (GET /api/vms, the
web VM list, a host's vm_count) as user VMs a person could select and act on. The
inventory leaves out every domain named here (virt/inventory.py).
"""

from __future__ import annotations

PROBE_PREFIX = "kvmm-accel-probe-"
HELPER_PREFIXES = (PROBE_PREFIX,)


def is_helper_guest(name: str) -> bool:
    return name.startswith(HELPER_PREFIXES)
