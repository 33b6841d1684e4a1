"""AgentService on the libvirt test driver, with the real agent on a unix socket standing
in for the guest's channel (the VM suite covers real channels)."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kvmmanager.agent.transports import UnixTransport
from kvmmanager.core.errors import AgentUnavailable, Conflict, InvalidInput

_path = Path(__file__).parents[3] / "kvmmanager_agent" / "conftest.py"
_spec = importlib.util.spec_from_file_location("kvmm_t_agent_fixtures_svc", _path)
assert _spec is not None and _spec.loader is not None
_fx = importlib.util.module_from_spec(_spec)
sys.modules["kvmm_t_agent_fixtures_svc"] = _fx
_spec.loader.exec_module(_fx)
roots = _fx.roots
start_agent = _fx.start_agent
agent = _fx.agent


@pytest.fixture
async def svc(manager: Any, agent: Any) -> AsyncIterator[Any]:
    host = manager.registry.get("local")
    await host.wait_connected()
    service = manager.agents

    async def opener(host_name: str, uuid: str) -> Any:
        return await UnixTransport.open(agent.path)

    service._opener = opener
    yield service
    await service.stop()


async def until(cond: Any, seconds: float = 30) -> None:
    """Poll a condition with a generous deadline."""
    async with asyncio.timeout(seconds):
        while not cond():  # noqa: ASYNC110 (polling a condition, per the test rules)
            await asyncio.sleep(0.01)


def set_domain(manager: Any, **changes: Any) -> Any:
    info = manager.inventory.domain("local", "test")
    return manager.inventory.put_domain(dataclasses.replace(info, **changes))


async def test_status_follows_the_channel_and_the_client(manager: Any, svc: Any) -> None:
    sub = manager.bus.subscribe(predicate=lambda e: e.kind == "domain.agent")
    assert svc.status("local", "test")["agent_status"] == "absent"
    with pytest.raises(AgentUnavailable):
        await svc.call("local", "test", "ping")
    # libvirt reports the guest opened the port: the service probes in the background.
    set_domain(manager, agent_status="connected")
    await until(lambda: svc.status("local", "test")["agent_info"] is not None)
    events = [sub._queue.get_nowait() for _ in range(sub._queue.qsize())]
    st = svc.status("local", "test")
    assert st["agent_status"] == "connected" and st["transport"] == "unix"
    assert st["agent_info"]["negotiated_protocol_version"] == 2
    assert any(e.data["status"] == "connecting" for e in events)
    # The port closes: the client is dropped.
    set_domain(manager, agent_status="absent")
    await until(lambda: not svc._clients)
    sub.close()


async def test_guest_info_from_our_agent(manager: Any, svc: Any) -> None:
    set_domain(manager, agent_status="connected")
    gi = await svc.guest_info("local", "test")
    assert gi.source == "kvmm" and gi.os_name and gi.kernel_version
    assert any(i.name == "lo" and "127.0.0.1/8" in i.ipv4_addresses for i in gi.interfaces)
    assert any(f.mount_point == "/" for f in gi.filesystems)
    assert (await svc.ping("local", "test"))["source"] == "kvmm"
    r = await svc.power("local", "test", "reboot", delay=3)
    assert r["initiated"] is True and r["source"] == "kvmm"


async def test_guest_info_from_qemu_guest_agent(manager: Any, svc: Any) -> None:
    # The test driver implements the agent-sourced addresses, fsInfo and getTime.
    set_domain(manager, qga_status="connected")
    gi = await svc.guest_info("local", "test")
    assert gi.source == "qga"
    assert gi.interfaces[0].ipv4_addresses == ["192.168.122.3/24"]
    assert [f.mount_point for f in gi.filesystems] == ["/", "/boot"]
    assert gi.guest_time is not None


async def test_refusals(manager: Any, svc: Any) -> None:
    with pytest.raises(InvalidInput):
        await svc.call("local", "test", "no_such_method")
    with pytest.raises(AgentUnavailable):
        await svc.guest_info("local", "test")
    set_domain(manager, state="shutoff", agent_status="absent")
    with pytest.raises(Conflict):
        await svc.call("local", "test", "ping")


def test_role_allowance(manager: Any) -> None:
    svc = manager.agents
    assert svc.allowed("viewer", "get_system_info")
    assert not svc.allowed("viewer", "exec_command")
    assert svc.allowed("operator", "exec_command")
    assert svc.allowed("admin", "file_write")
    assert not svc.allowed("viewer", "nope")
    svc.settings.allow = {"viewer": ["exec_command"]}
    assert svc.allowed("viewer", "exec_command")
    assert svc.allowed("operator", "exec_command")
