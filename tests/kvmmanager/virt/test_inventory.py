"""Inventory: pure in-memory reads, and the events each write publishes."""

from __future__ import annotations

import dataclasses

import pytest

from kvmmanager.core.errors import InvalidInput, NotFound
from kvmmanager.virt.events import Event
from kvmmanager.virt.inventory import ChannelInfo, DomainInfo, NetworkInfo, PoolInfo


def _drain(sub) -> list[Event]:
    out = []
    while not sub._queue.empty():
        out.append(sub._queue.get_nowait())
    return out


def _dom(name: str, uuid: str, host: str = "h1", **kw) -> DomainInfo:
    return DomainInfo(host=host, name=name, uuid=uuid, **kw)


def test_reads_by_name_or_uuid_and_per_host(inventory):
    inventory.put_domain(_dom("b", "u-2"))
    inventory.put_domain(_dom("a", "u-1"))
    inventory.put_domain(_dom("a", "u-3", host="h2"))
    assert [d.uuid for d in inventory.domains("h1")] == ["u-1", "u-2"]
    assert [(d.host, d.name) for d in inventory.domains()] == [
        ("h1", "a"),
        ("h1", "b"),
        ("h2", "a"),
    ]
    assert inventory.domain("h1", "b").uuid == "u-2"
    assert inventory.domain("h1", "U-2").name == "b"
    with pytest.raises(NotFound, match="VM 'c' not found on host 'h1'") as info:
        inventory.domain("h1", "c")
    assert info.value.field == "vm"
    assert inventory.domains("nohost") == []


async def test_put_publishes_added_then_updated_only_on_change(bus, inventory):
    sub = bus.subscribe()
    info = _dom("a", "u-1", state="shutoff")
    inventory.put_domain(info)
    inventory.put_domain(dataclasses.replace(info, updated_at=info.updated_at + 5))
    inventory.put_domain(dataclasses.replace(info, state="running"))
    events = _drain(sub)
    assert [(e.kind, e.subject, e.data["state"]) for e in events] == [
        ("domain.added", "u-1", "shutoff"),
        ("domain.updated", "u-1", "running"),
    ]
    inventory.remove_domain("h1", "u-1")
    inventory.remove_domain("h1", "u-1")
    assert [e.kind for e in _drain(sub)] == ["domain.removed"]


async def test_agent_channel_changes_publish_domain_agent(bus, inventory):
    sub = bus.subscribe()
    chan = (ChannelInfo("org.kvmmanager.agent.0", "unix", "connected"),)
    base = _dom("a", "u-1")
    inventory.put_domain(base)
    inventory.put_domain(dataclasses.replace(base, channels=chan, agent_status="connected"))
    inventory.put_domain(dataclasses.replace(base, qga_status="disconnected"))
    agent = [e for e in _drain(sub) if e.kind == "domain.agent"]
    assert [(e.data["channel"], e.data["status"]) for e in agent] == [
        ("kvmm", "connected"),
        ("kvmm", "absent"),
        ("qga", "disconnected"),
    ]


async def test_set_agent_status_holds_while_the_port_is_open(bus, inventory):
    open_port = _dom("a", "u-1", agent_status="connected")
    inventory.put_domain(open_port)
    sub = bus.subscribe()
    inventory.set_agent_status("h1", "u-1", "unresponsive")
    assert inventory.domain("h1", "a").agent_status == "unresponsive"
    # A re-read after an unrelated event keeps the client's verdict...
    inventory.put_domain(dataclasses.replace(open_port, title="x"))
    assert inventory.domain("h1", "a").agent_status == "unresponsive"
    # ...until libvirt says the guest closed the port.
    inventory.put_domain(dataclasses.replace(open_port, agent_status="absent"))
    inventory.put_domain(open_port)
    assert inventory.domain("h1", "a").agent_status == "connected"
    statuses = [e.data["status"] for e in _drain(sub) if e.kind == "domain.agent"]
    assert statuses == ["unresponsive", "absent", "connected"]
    with pytest.raises(InvalidInput, match="agent status must be one of") as info:
        inventory.set_agent_status("h1", "u-1", "happy")
    assert info.value.field == "status"
    with pytest.raises(NotFound):
        inventory.set_agent_status("h1", "u-404", "connected")


async def test_replace_host_publishes_only_differences(bus, inventory):
    keep, change, drop = _dom("keep", "u-1"), _dom("change", "u-2"), _dom("drop", "u-3")
    for d in (keep, change, drop):
        inventory.put_domain(d)
    inventory.put_pool(PoolInfo(host="h1", name="p1", uuid="p-1"))
    inventory.put_domain(_dom("other-host", "u-9", host="h2"))
    sub = bus.subscribe()
    inventory.replace_host(
        "h1",
        [keep, dataclasses.replace(change, state="running"), _dom("new", "u-4")],
        [],
        [NetworkInfo(host="h1", name="n1", uuid="n-1")],
    )
    events = {(e.kind, e.subject) for e in _drain(sub)}
    assert events == {
        ("domain.removed", "u-3"),
        ("domain.updated", "u-2"),
        ("domain.added", "u-4"),
        ("pool.removed", "p1"),
        ("network.added", "n1"),
    }
    assert [d.name for d in inventory.domains("h2")] == ["other-host"]
    inventory.clear_host("h1")
    assert inventory.domains("h1") == [] and inventory.networks("h1") == []
    assert "h1" not in inventory.hosts()


def test_pool_and_network_lookups_name_the_host(inventory):
    inventory.put_network(NetworkInfo(host="h1", name="n1", uuid="n-1", active=True))
    assert inventory.network("h1", "n1").active
    with pytest.raises(NotFound, match="network 'n2' not found on host 'h1'"):
        inventory.network("h1", "n2")
    with pytest.raises(NotFound, match="pool 'p' not found on host 'h1'"):
        inventory.pool("h1", "p")
