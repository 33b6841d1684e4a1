"""HostRegistry: names, lookups, start and stop of connections."""

from __future__ import annotations

import pytest

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound
from kvmmanager.virt.registry import HostRegistry, validate_host_name, validate_uri


@pytest.fixture
async def registry(libvirt_settings, bus, inventory):
    reg = HostRegistry(libvirt_settings, bus, inventory)
    yield reg
    await reg.close()


async def test_add_get_all_remove(registry, inventory, testnode_uri):
    host = await registry.add("kvmm-t-host-r1", testnode_uri)
    await registry.add("kvmm-t-host-r0", testnode_uri)
    assert registry.get("kvmm-t-host-r1") is host
    assert [h.name for h in registry.all()] == ["kvmm-t-host-r0", "kvmm-t-host-r1"]
    await host.wait_connected(30)
    assert inventory.domains("kvmm-t-host-r1")
    with pytest.raises(Conflict, match="'kvmm-t-host-r1' already exists"):
        await registry.add("kvmm-t-host-r1", testnode_uri)
    await registry.remove("kvmm-t-host-r1")
    assert host.status == "disconnected"
    assert inventory.domains("kvmm-t-host-r1") == []
    with pytest.raises(NotFound, match="host 'kvmm-t-host-r1' not found") as info:
        registry.get("kvmm-t-host-r1")
    assert info.value.field == "host"


@pytest.mark.parametrize("name", ["", "A", "-x", "a/b", "a b", "x" * 64, "a\x00", "é"])
def test_bad_host_names(name):
    with pytest.raises(InvalidInput) as info:
        validate_host_name(name)
    assert info.value.field == "name"


@pytest.mark.parametrize(
    "uri", ["", "   ", "no-scheme", "qemu:///system\n", "qemu:// system", "x" * 2000, "1q:///"]
)
def test_bad_uris(uri):
    with pytest.raises(InvalidInput) as info:
        validate_uri(uri)
    assert info.value.field == "uri"


def test_good_names_and_uris():
    assert validate_host_name("kvm-2") == "kvm-2"
    assert validate_host_name("x" * 63)
    for uri in ("qemu:///system", "qemu+ssh://root@h:2222/system?keyfile=/k", "test:///default"):
        assert validate_uri(uri) == uri
