"""A host that has never been listed (its daemon failed or froze before the manager's
first listing): its VM list is refused naming it, never an empty list that would claim
the host has no VMs."""

from __future__ import annotations

import pytest

from kvmmanager.core.errors import HostUnavailable

GONE = "qemu+unix:///system?socket=/nonexistent/kvmm-t-vmlist.sock"


async def test_vm_list_of_a_host_never_listed_is_refused_naming_it(manager) -> None:
    hc = await manager.registry.add("kvmm-t-vmlist", GONE)
    await hc.wait_status("failed", seconds=30)
    with pytest.raises(HostUnavailable) as info:
        manager.vms.list(host="kvmm-t-vmlist")
    msg = info.value.message
    assert "host 'kvmm-t-vmlist' is failed" in msg, msg
    assert "its VMs are unknown" in msg, msg
    # The other host's list is untouched.
    await manager.registry.get("local").wait_connected(30)
    assert [d.name for d in manager.vms.list(host="local")] == ["test"]
