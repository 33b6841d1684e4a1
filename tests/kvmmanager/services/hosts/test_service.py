"""HostService: the persisted host list and what a host offers, on libvirt's test driver."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound, Unsupported
from kvmmanager.services.hosts.service import version_string
from kvmmanager.services.manager import Manager

TESTNODE = Path(__file__).parents[2] / "virt" / "fixtures" / "testnode.xml"
TESTNODE_URI = f"test://{TESTNODE}"


async def test_first_start_has_the_local_host(manager):
    await manager.registry.get("local").wait_connected(30)
    (local,) = await manager.hosts.list()
    assert (local["name"], local["uri"], local["status"]) == (
        "local",
        "test:///default",
        "connected",
    )
    assert local["vm_count"] == len(manager.inventory.domains("local")) > 0
    assert local["created_at"] is not None


async def test_add_persists_and_survives_a_restart(manager, settings):
    added = await manager.hosts.add("kvmm-t-host-s1", TESTNODE_URI)
    assert added["name"] == "kvmm-t-host-s1" and added["status"] in ("connecting", "connected")
    await manager.registry.get("kvmm-t-host-s1").wait_connected(30)
    assert (await manager.hosts.get("kvmm-t-host-s1"))["vm_count"] == 2

    second = Manager(settings)
    await second.start()
    try:
        names = [h["name"] for h in await second.hosts.list()]
        assert names == ["kvmm-t-host-s1", "local"]
    finally:
        await second.stop()


async def test_add_refuses_bad_input_and_duplicates(manager):
    with pytest.raises(InvalidInput) as info:
        await manager.hosts.add("Bad/Name", TESTNODE_URI)
    assert info.value.field == "name"
    with pytest.raises(InvalidInput) as info:
        await manager.hosts.add("kvmm-t-host-s2", "not a uri")
    assert info.value.field == "uri"
    with pytest.raises(Conflict, match="'local' already exists"):
        await manager.hosts.add("local", TESTNODE_URI)
    assert [h["name"] for h in await manager.hosts.list()] == ["local"]


async def test_remove(manager):
    await manager.hosts.add("kvmm-t-host-s3", TESTNODE_URI)
    await manager.hosts.remove("kvmm-t-host-s3")
    with pytest.raises(NotFound, match="host 'kvmm-t-host-s3' not found"):
        await manager.hosts.get("kvmm-t-host-s3")
    with pytest.raises(NotFound):
        await manager.hosts.remove("kvmm-t-host-s3")
    assert manager.inventory.domains("kvmm-t-host-s3") == []
    assert [h["name"] for h in await manager.hosts.list()] == ["local"]


async def test_info_capabilities_and_domain_capabilities(manager):
    await manager.registry.get("local").wait_connected(30)
    info = await manager.hosts.info("local")
    assert info["name"] == "local" and info["driver"] == "TEST"
    assert info["libvirt_version"].count(".") == 2
    assert info["cpu"]["count"] == 16 and info["memory_mib"] > 0
    assert info["accel"]["accel"] == "tcg" and info["accel"]["domain_type"] == "qemu"

    caps = await manager.hosts.capabilities("local")
    assert caps["host"]["arch"] == "i686"
    assert {g["arch"] for g in caps["guests"]} >= {"i686"}
    assert all("test" in g["domain_types"] for g in caps["guests"])

    # The test driver has no domain capabilities: a clear "unsupported", naming the host.
    with pytest.raises(Unsupported, match="host 'local'"):
        await manager.hosts.domain_capabilities("local")
    with pytest.raises(NotFound, match="host 'nohost'"):
        await manager.hosts.info("nohost")


def test_version_string():
    assert version_string(9_000_000) == "9.0.0"
    assert version_string(7_002_022) == "7.2.22"
