"""Scenario 9: eject the ISO, delete the VMs with their volumes, remove the network and
pool: nothing the suite made is left in libvirt."""

from __future__ import annotations

import pytest

from .conftest import PREFIX, Fleet, Lab, libvirt_leftovers
from .support.api import ApiError

pytestmark = pytest.mark.vm


def test_eject_iso_after_install(lab: Lab, fleet: Fleet) -> None:
    lab.api.eject_agent_iso(fleet.agent.name)
    dom = fleet.agent.domain_xml()
    for cd in dom.findall("./devices/disk[@device='cdrom']"):
        assert cd.find("source") is None or not cd.find("source").attrib


def test_delete_vms_with_volumes_leaves_nothing(lab: Lab, fleet: Fleet) -> None:
    for g in (fleet.agent, fleet.qga):
        try:
            lab.api.action(g.name, "destroy")
        except ApiError as exc:
            assert exc.status == 409  # already off
        deleted = lab.api.delete_vm(g.name)
        assert deleted["deleted_volumes"], deleted
    names = {v["name"] for v in lab.api.volumes(lab.pool)}
    # Only the shared agent ISO stays in the pool (CD-ROM media are never deleted with a VM).
    assert all(n.endswith(".iso") for n in names), names
    lab.api.delete_pool(lab.pool)
    lab.api.delete_network(lab.network)
    assert libvirt_leftovers(f"{PREFIX}{lab.run_id}") == []
