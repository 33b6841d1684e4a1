"""NetworkService: spec validation, XML (validated against libvirt's schema), and the
lifecycle on libvirt's test driver (process-wide state: unique kvmm-t-sto- names)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lxml import etree

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound, Unsupported
from kvmmanager.services.networks.service import (
    NetworkSpec,
    build_network_xml,
    validate_network_spec,
)
from kvmmanager.virt.xml.network import Network
from kvmmanager.virt.xml.validate import validate_xml

HOST = "local"


def _name() -> str:
    return f"kvmm-t-sto-net-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize(
    "spec",
    [
        NetworkSpec(name="n1", forward="nat", address="10.213.1.1", prefix=24,
                    dhcp_start="10.213.1.100", dhcp_end="10.213.1.200", bridge="virbr-kt-01",
                    domain="lab.example"),
        NetworkSpec(name="n2", forward="isolated", address="10.213.2.1"),
        NetworkSpec(name="n3", forward="isolated"),
        NetworkSpec(name="n4", forward="route", address="10.213.4.1", prefix=28,
                    forward_dev="eth0"),
        NetworkSpec(name="n5", forward="open", address="10.213.5.1", dhcp_start="10.213.5.2",
                    dhcp_end="10.213.5.9"),
    ],
    ids=["nat-dhcp", "isolated", "isolated-no-ip", "routed", "open"],
)  # fmt: skip
def test_every_kind_of_network_xml_validates_and_reads_back(spec: NetworkSpec) -> None:
    xml = build_network_xml(validate_network_spec(spec))
    validate_xml(xml, "network")
    model = Network.from_xml(xml)
    assert model.name == spec.name
    expected_mode = "none" if spec.forward == "isolated" else spec.forward
    assert model.forward_mode == expected_mode
    ip = model.ipv4()
    if spec.address is None:
        assert ip is None
    else:
        assert ip is not None and ip.address == spec.address and ip.prefix == spec.prefix
        ranges = [(r.start, r.end) for r in ip.dhcp_ranges]
        assert ranges == ([(spec.dhcp_start, spec.dhcp_end)] if spec.dhcp_start else [])


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "a/b"}, "name"),
        ({"name": "tab\there"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": "n", "bridge": "a-very-long-bridge-name"}, "bridge"),
        ({"name": "n", "bridge": "br 0"}, "bridge"),
        ({"name": "n", "address": "10.213.1.300"}, "address"),
        ({"name": "n", "address": "10.213.1.0", "prefix": 24}, "address"),
        ({"name": "n", "address": "10.213.1.255", "prefix": 24}, "address"),
        ({"name": "n", "address": "127.0.0.1"}, "address"),
        ({"name": "n", "address": "10.213.1.1", "prefix": 33}, "prefix"),
        ({"name": "n", "address": "10.213.1.1", "prefix": 4}, "prefix"),
        ({"name": "n", "dhcp_start": "10.213.1.2", "dhcp_end": "10.213.1.9"}, "address"),
        ({"name": "n", "address": "10.213.1.1", "dhcp_start": "10.213.1.2"}, "dhcp_end"),
        ({"name": "n", "address": "10.213.1.1", "dhcp_end": "10.213.1.9"}, "dhcp_start"),
        ({"name": "n", "address": "10.213.1.1", "dhcp_start": "10.213.2.2",
          "dhcp_end": "10.213.2.9"}, "dhcp_start"),
        ({"name": "n", "address": "10.213.1.1", "dhcp_start": "10.213.1.2",
          "dhcp_end": "10.213.9.9"}, "dhcp_end"),
        ({"name": "n", "address": "10.213.1.1", "dhcp_start": "10.213.1.90",
          "dhcp_end": "10.213.1.10"}, "dhcp_start"),
        ({"name": "n", "address": "10.213.1.50", "dhcp_start": "10.213.1.10",
          "dhcp_end": "10.213.1.90"}, "dhcp_start"),
        ({"name": "n", "address": "10.213.1.1", "dhcp_start": "nonsense",
          "dhcp_end": "10.213.1.9"}, "dhcp_start"),
        ({"name": "n", "forward": "route"}, "address"),
        ({"name": "n", "forward": "isolated", "forward_dev": "eth0"}, "forward_dev"),
        ({"name": "n", "domain": "bad domain"}, "domain"),
    ],
)  # fmt: skip
def test_bad_network_specs_name_the_field(spec: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        validate_network_spec(NetworkSpec(**spec))
    assert exc.value.field == field


@pytest.fixture
async def networks(manager: Any) -> Any:
    await manager.registry.get(HOST).wait_connected(30)
    return manager.networks


@pytest.fixture
async def net(networks: Any) -> AsyncIterator[str]:
    name = _name()
    spec = NetworkSpec(name=name, address="10.213.60.1", dhcp_start="10.213.60.10",
                       dhcp_end="10.213.60.99", bridge="virbr-kt-60")  # fmt: skip
    await networks.define(HOST, spec)
    try:
        yield name
    finally:
        with contextlib.suppress(NotFound):
            await networks.delete(HOST, name)


async def test_define_starts_and_reports_the_network(networks: Any, net: str) -> None:
    details = await networks.get(HOST, net)
    assert details.active and details.autostart and details.persistent
    assert (details.forward, details.bridge) == ("nat", "virbr-kt-60")
    assert (details.address, details.prefix) == ("10.213.60.1", 24)
    assert (details.dhcp_start, details.dhcp_end) == ("10.213.60.10", "10.213.60.99")
    assert net in [n.name for n in await networks.list(HOST)]


async def test_lifecycle_and_wrong_states(manager: Any, networks: Any, net: str) -> None:
    with pytest.raises(Conflict):
        await networks.start(HOST, net)
    assert not (await networks.stop(HOST, net)).active
    with pytest.raises(Conflict):
        await networks.stop(HOST, net)
    with pytest.raises(Conflict):
        await networks.leases(HOST, net)
    assert (await networks.start(HOST, net)).active
    assert not (await networks.set_autostart(HOST, net, False)).autostart
    assert manager.inventory.network(HOST, net).autostart is False
    assert (await networks.set_autostart(HOST, net, True)).autostart
    with pytest.raises(Conflict) as exc:
        await networks.define(HOST, NetworkSpec(name=net, forward="isolated"))
    assert exc.value.field == "name"
    await networks.delete(HOST, net)
    with pytest.raises(NotFound) as exc:
        await networks.get(HOST, net)
    assert exc.value.field == "network"


async def test_define_isolated_without_start(networks: Any) -> None:
    name = _name()
    spec = NetworkSpec(name=name, forward="isolated", start=False, autostart=False)
    details = await networks.define(HOST, spec)
    try:
        assert not details.active and not details.autostart
        assert details.forward == "isolated" and details.address is None
    finally:
        await networks.delete(HOST, name)


async def test_unknown_network_and_bad_mac(networks: Any, net: str) -> None:
    for call in (networks.get, networks.start, networks.stop, networks.delete, networks.leases):
        with pytest.raises(NotFound):
            await call(HOST, "kvmm-t-sto-missing")
    with pytest.raises(InvalidInput) as exc:
        await networks.leases(HOST, net, "not-a-mac")
    assert exc.value.field == "mac"


async def test_leases_on_the_test_driver_are_unsupported(networks: Any, net: str) -> None:
    # The test driver has no DHCP server; the real one is covered in the libvirtd tests.
    with pytest.raises(Unsupported):
        await networks.leases(HOST, net)


async def test_bridge_and_subnet_collisions_name_the_field(networks: Any) -> None:
    # test:///default has the active network 'default' on virbr0, 192.168.122.0/24.
    with pytest.raises(Conflict) as exc:
        await networks.define(HOST, NetworkSpec(name=_name(), bridge="virbr0"))
    assert exc.value.field == "bridge"
    with pytest.raises(Conflict) as exc:
        await networks.define(HOST, NetworkSpec(name=_name(), address="192.168.122.129",
                                                prefix=25))  # fmt: skip
    assert exc.value.field == "address" and "default" in exc.value.message
    # Not started: an overlapping subnet may be defined for later.
    name = _name()
    await networks.define(
        HOST, NetworkSpec(name=name, address="192.168.122.1", start=False, autostart=False)
    )
    await networks.delete(HOST, name)


def _vm_on_network_xml(name: str, network: str) -> str:
    dom = etree.Element("domain", type="test")
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "memory").text = "65536"
    etree.SubElement(etree.SubElement(dom, "os"), "type").text = "hvm"
    nic = etree.SubElement(etree.SubElement(dom, "devices"), "interface", type="network")
    etree.SubElement(nic, "source", network=network)
    return etree.tostring(dom, encoding="unicode")


async def test_delete_refuses_a_network_running_vms_use(
    manager: Any, networks: Any, net: str
) -> None:
    host = manager.registry.get(HOST)
    vm = f"kvmm-t-sto-vm-{uuid.uuid4().hex[:8]}"
    with manager.bus.subscribe(predicate=lambda e: e.kind.startswith("domain.")) as sub:
        await host.run(lambda: host.conn.createXML(_vm_on_network_xml(vm, net), 0))
        try:
            async with asyncio.timeout(30):
                while not any(d.name == vm and d.state == "running"
                              for d in manager.inventory.domains(HOST)):  # fmt: skip
                    await sub.get()
            with pytest.raises(Conflict) as exc:
                await networks.delete(HOST, net)
            assert vm in exc.value.message
        finally:
            await host.run(lambda: host.conn.lookupByName(vm).destroy())
        # A transient VM is gone once destroyed: then the network is free to delete.
        async with asyncio.timeout(30):
            while any(d.name == vm for d in manager.inventory.domains(HOST)):
                await sub.get()
    await networks.delete(HOST, net)


@pytest.mark.parametrize("forward", ["route", "open"])
async def test_routed_and_open_networks(networks: Any, forward: str) -> None:
    name = _name()
    octet = 61 if forward == "route" else 62
    net = f"10.213.{octet}"
    spec = NetworkSpec(name=name, forward=forward, address=f"{net}.1", prefix=24,
                       dhcp_start=f"{net}.100", dhcp_end=f"{net}.150")  # fmt: skip
    details = await networks.define(HOST, spec)
    try:
        assert details.forward == forward and details.active
        assert (details.dhcp_start, details.dhcp_end) == (spec.dhcp_start, spec.dhcp_end)
    finally:
        await networks.delete(HOST, name)


async def test_transient_network_stop_and_delete(manager: Any, networks: Any) -> None:
    host = manager.registry.get(HOST)
    checked = validate_network_spec(NetworkSpec(name=_name(), forward="isolated"))
    xml = build_network_xml(checked)
    for action in ("stop", "delete"):
        await host.run(lambda: host.conn.networkCreateXML(xml))
        name = checked.spec.name
        assert not (await networks.get(HOST, name)).persistent
        with pytest.raises(Conflict):
            await networks.set_autostart(HOST, name, True)
        if action == "stop":
            assert (await networks.stop(HOST, name)).active is False
        else:
            await networks.delete(HOST, name)
        with pytest.raises(NotFound):
            await networks.get(HOST, name)
