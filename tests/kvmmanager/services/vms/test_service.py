"""VmService on the test driver: shutdown picks the right agent. The service is built
with the manager's collaborators and a stand-in for the agent service (it takes only
what it uses, so no fake Manager is needed)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import libvirt
import pytest

from kvmmanager.core.errors import AgentUnavailable, Conflict
from kvmmanager.services.vms.service import VmService
from kvmmanager.services.vms.spec import VmSpec


class FakeAgents:
    """Stands in for AgentService.power: records calls, optionally fails."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.fail = fail

    async def power(self, host: str, vm: str, action: str) -> dict[str, Any]:
        self.calls.append((host, vm, action))
        if self.fail:
            raise AgentUnavailable("agent went away")
        return {"source": "kvmm", "initiated": True}


def vms_with(manager, agents: FakeAgents) -> VmService:
    """The manager's VM service, but asking `agents` for agent power actions."""
    return VmService(
        manager.settings.spice,
        manager.bus,
        manager.inventory,
        manager.registry,
        manager.ownership,
        manager.hosts,
        agents,  # stands in for AgentService (only power is asked)
    )


@pytest.fixture
async def running_vm(manager, monkeypatch):
    await manager.registry.get("local").wait_connected(30)
    name = f"kvmm-t-vm-{uuid.uuid4().hex[:8]}"
    res = await manager.vms.create("local", VmSpec(name=name, memory_mib=64, start=True))
    info = res["vm"]
    # The test driver has no guests: the inventory says the project's agent answered in
    # this one (patched on reads, so libvirt's own events cannot overwrite it).
    real_domain = manager.inventory.domain

    def domain(host: str, vm: str):
        found = real_domain(host, vm)
        if found.uuid == info.uuid:
            # And running, as it is: under load the inventory may still hold the state
            # of an earlier lifecycle event of the create (seen in a clean-clone run).
            return dataclasses.replace(found, agent_status="connected", state="running")
        return found

    monkeypatch.setattr(manager.inventory, "domain", domain)
    yield info
    conn = libvirt.open("test:///default")
    try:
        dom = conn.lookupByUUIDString(info.uuid)
        if dom.isActive():
            dom.destroy()
        dom.undefine()
    except libvirt.libvirtError:
        pass
    conn.close()


async def test_auto_shutdown_uses_the_connected_project_agent(manager, running_vm):
    fake = FakeAgents()
    res = await vms_with(manager, fake).shutdown("local", running_vm.name, "auto")
    assert fake.calls == [("local", running_vm.uuid, "shutdown")]
    assert res.details["mode"] == "agent" and res.state == "running"


async def test_auto_shutdown_falls_back_to_acpi_when_the_agent_fails(manager, running_vm):
    vms = vms_with(manager, FakeAgents(fail=True))
    res = await vms.shutdown("local", running_vm.name, "auto")
    assert res.details["mode"] == "acpi"


async def test_agent_mode_reports_the_agent_failure(manager, running_vm):
    vms = vms_with(manager, FakeAgents(fail=True))
    with pytest.raises(AgentUnavailable):
        await vms.shutdown("local", running_vm.name, "agent")


async def test_acpi_mode_never_asks_an_agent(manager, running_vm):
    fake = FakeAgents()
    vms = vms_with(manager, fake)
    res = await vms.shutdown("local", running_vm.uuid, "acpi")
    assert fake.calls == [] and res.details["mode"] == "acpi"
    with pytest.raises(Conflict, match="is not running"):
        await vms.shutdown("local", running_vm.uuid, "acpi")
