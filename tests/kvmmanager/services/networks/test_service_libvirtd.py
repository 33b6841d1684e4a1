"""Networks on the real libvirtd: a NAT network with DHCP (dnsmasq) and an isolated one,
started, listed with their leases, stopped and deleted. Bridges virbr-kt-NN and subnets
10.213.NN.0/24 keep clear of everyone else's."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import libvirt
import pytest

from kvmmanager.core.config import Settings
from kvmmanager.core.errors import Conflict
from kvmmanager.services.networks.service import NetworkSpec

pytestmark = pytest.mark.libvirtd

HOST = "local"


@pytest.fixture
async def real_manager(settings: Settings) -> AsyncIterator[Any]:
    from kvmmanager.services.manager import Manager

    settings.libvirt.default_uri = "qemu:///system"
    m = Manager(settings)
    await m.start()
    await m.registry.get(HOST).wait_connected(60)
    try:
        yield m
    finally:
        await m.stop()


@pytest.fixture
def net_names() -> Iterator[list[str]]:
    """Names the test will create; whatever is left of them is removed afterwards."""
    names: list[str] = []
    yield names
    conn = libvirt.open("qemu:///system")
    try:
        for name in names:
            with contextlib.suppress(libvirt.libvirtError):
                net = conn.networkLookupByName(name)
                if net.isActive():
                    net.destroy()
                net.undefine()
    finally:
        conn.close()


def _bridges() -> set[str]:
    conn = libvirt.open("qemu:///system")
    try:
        return {n.bridgeName() for n in conn.listAllNetworks(0) if n.isActive()}
    finally:
        conn.close()


async def test_nat_and_isolated_networks_start_and_stop(
    real_manager: Any, net_names: list[str]
) -> None:
    svc = real_manager.networks
    suffix = uuid.uuid4().hex[:6]
    nat, iso = f"kvmm-t-sto-nat-{suffix}", f"kvmm-t-sto-iso-{suffix}"
    net_names += [nat, iso]

    nat_details = await svc.define(
        HOST,
        NetworkSpec(name=nat, forward="nat", bridge="virbr-kt-71", address="10.213.71.1",
                    dhcp_start="10.213.71.10", dhcp_end="10.213.71.50", autostart=False),
    )  # fmt: skip
    iso_details = await svc.define(
        HOST,
        NetworkSpec(name=iso, forward="isolated", bridge="virbr-kt-72", address="10.213.72.1",
                    autostart=False),
    )  # fmt: skip
    assert nat_details.active and nat_details.forward == "nat"
    assert iso_details.active and iso_details.forward == "isolated"
    assert {"virbr-kt-71", "virbr-kt-72"} <= _bridges()
    # dnsmasq answers for the NAT network; no guest asked yet, so no lease.
    assert await svc.leases(HOST, nat) == []

    listed = {n.name: n for n in await svc.list(HOST)}
    assert listed[nat].dhcp_start == "10.213.71.10"
    assert listed[iso].address == "10.213.72.1"

    for name in (nat, iso):
        assert not (await svc.stop(HOST, name)).active
        with pytest.raises(Conflict):
            await svc.stop(HOST, name)
    assert not {"virbr-kt-71", "virbr-kt-72"} & _bridges()
    assert (await svc.start(HOST, nat)).active
    for name in (nat, iso):
        await svc.delete(HOST, name)
    assert not {nat, iso} & {n.name for n in await svc.list(HOST)}
