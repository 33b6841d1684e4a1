"""VmService through the Manager on the test driver: shutdown picks the right agent."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import libvirt
import pytest

from kvmmanager.core.errors import AgentUnavailable, Conflict
from kvmmanager.services.vm_spec import VmSpec


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
    manager.__dict__["agents"] = fake
    res = await manager.vms.shutdown("local", running_vm.name, "auto")
    assert fake.calls == [("local", running_vm.uuid, "shutdown")]
    assert res.details["mode"] == "agent" and res.state == "running"


async def test_auto_shutdown_falls_back_to_acpi_when_the_agent_fails(manager, running_vm):
    manager.__dict__["agents"] = FakeAgents(fail=True)
    res = await manager.vms.shutdown("local", running_vm.name, "auto")
    assert res.details["mode"] == "acpi"


async def test_agent_mode_reports_the_agent_failure(manager, running_vm):
    manager.__dict__["agents"] = FakeAgents(fail=True)
    with pytest.raises(AgentUnavailable):
        await manager.vms.shutdown("local", running_vm.name, "agent")


async def test_acpi_mode_never_asks_an_agent(manager, running_vm):
    fake = FakeAgents()
    manager.__dict__["agents"] = fake
    res = await manager.vms.shutdown("local", running_vm.uuid, "acpi")
    assert fake.calls == [] and res.details["mode"] == "acpi"
    with pytest.raises(Conflict, match="is not running"):
        await manager.vms.shutdown("local", running_vm.uuid, "acpi")
