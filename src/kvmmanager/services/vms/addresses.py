"""A VM's IP addresses, from the best source that answers, with the source named:
our agent, else qemu-guest-agent (through libvirt), else the DHCP leases libvirt's
networks handed out. Guest-reported data is already bounded by the agent models.

Listing pages ask for many VMs at once, so answers are kept for a few seconds.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import libvirt

from kvmmanager.agent import qga
from kvmmanager.agent.models import GuestInterface, interface_from_kvmm
from kvmmanager.core.errors import KvmmError
from kvmmanager.services.guest.agents import AgentService
from kvmmanager.services.vms.builder import lookup
from kvmmanager.services.vms.service import VmService
from kvmmanager.virt.registry import HostRegistry

TTL_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class Address:
    ip: str  # CIDR, as the source reports it
    interface: str
    mac: str | None
    source: str  # "agent" | "qemu-ga" | "dhcp"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _flatten(ifaces: list[GuestInterface], source: str) -> list[Address]:
    out = []
    for i in ifaces:
        if i.name == "lo":
            continue
        for ip in [*i.ipv4_addresses, *i.ipv6_addresses]:
            if ip.startswith(("127.", "::1", "fe80:")):
                continue
            out.append(Address(ip, i.name, i.mac_address, source))
    return out


class AddressService:
    def __init__(self, registry: HostRegistry, vms: VmService, agents: AgentService) -> None:
        self._registry = registry
        self._vms = vms
        self._agents = agents
        self._cache: dict[tuple[str, str], tuple[float, list[Address]]] = {}

    async def of(self, host: str, vm: str) -> list[Address]:
        info = self._vms.get(host, vm)
        key = (host, info.uuid)
        cached = self._cache.get(key)
        if cached and time.monotonic() - cached[0] < TTL_SECONDS:
            return cached[1]
        found = await self._lookup(host, info) if info.state == "running" else []
        self._cache[key] = (time.monotonic(), found)
        if len(self._cache) > 10_000:  # VMs come and go: forget the oldest answers
            for k in sorted(self._cache, key=lambda k: self._cache[k][0])[:5_000]:
                del self._cache[k]
        return found

    async def _lookup(self, host: str, info: Any) -> list[Address]:
        if info.agent_status == "connected":
            try:
                net = await self._agents.call(host, info.uuid, "get_network_info")
                ifaces = [interface_from_kvmm(i) for i in (net or {}).get("interfaces") or []]
                if found := _flatten([i for i in ifaces if i], "agent"):
                    return found
            except KvmmError:
                pass
        hc = self._registry.get(host)
        sources = []
        if info.qga_status == "connected":
            sources.append((libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, "qemu-ga"))
        sources.append((libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, "dhcp"))
        for src, name in sources:
            try:
                ifaces = await hc.run(
                    lambda s=src: qga.interfaces(lookup(hc.conn, host, info.uuid), s),
                    kind="read",
                    op="interface addresses",
                )
            except KvmmError:
                continue
            if found := _flatten(ifaces, name):
                return found
        return []
