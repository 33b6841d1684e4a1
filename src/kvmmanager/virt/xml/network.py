"""``<network>``: libvirt virtual networks (NAT, routed, open, isolated) with DHCP.

Example::

    from kvmmanager.virt.xml.network import Network, IP, DhcpRange, DhcpHost

    net = Network(name="lab", forward_mode="nat", bridge_name="virbr10", bridge_stp=True)
    ip = net.add(IP(address="192.168.50.1", netmask="255.255.255.0"))
    ip.add(DhcpRange(start="192.168.50.100", end="192.168.50.200"))
    ip.add(DhcpHost(mac="52:54:00:00:00:01", name="db", ip="192.168.50.10"))
    conn.networkDefineXML(net.to_xml())

``forward_mode`` is ``"none"`` for an isolated network (no ``<forward>`` element at all).
"""

from __future__ import annotations

import ipaddress

from kvmmanager.core.errors import InvalidInput
from kvmmanager.virt.xml.base import XMLChildList, XMLObject, XMLProperty, detach

FORWARD_MODES = (
    "nat", "route", "open", "bridge", "private", "vepa", "passthrough", "hostdev", "none",
)  # fmt: skip


class _IPProperty(XMLProperty):
    """An address attribute checked with :mod:`ipaddress`."""

    def _to_text(self, value: object) -> str:
        text = super()._to_text(value)
        try:
            ipaddress.ip_address(text)
        except ValueError as exc:
            raise InvalidInput(
                f"{self.name} is not an IP address: {text!r}", field=self.name
            ) from exc
        return text


class DhcpRange(XMLObject):
    TAG = "range"

    start = _IPProperty("@start")
    end = _IPProperty("@end")


class DhcpHost(XMLObject):
    """A static lease: ``mac`` (IPv4) or ``name`` identifies the guest."""

    TAG = "host"

    mac = XMLProperty("@mac")
    name = XMLProperty("@name")
    ip = _IPProperty("@ip")


class IP(XMLObject):
    TAG = "ip"

    family = XMLProperty("@family", choices=("ipv4", "ipv6"))
    address = _IPProperty("@address")
    netmask = _IPProperty("@netmask")
    prefix = XMLProperty("@prefix", kind=int, minimum=0)
    dhcp_ranges = XMLChildList(DhcpRange, "dhcp/range")
    dhcp_hosts = XMLChildList(DhcpHost, "dhcp/host")

    @property
    def interface(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
        """Address plus prefix, from ``prefix`` or ``netmask`` (a bare address without
        either is returned as a host address)."""
        if self.address is None:
            return None
        if self.prefix is not None:
            return ipaddress.ip_interface(f"{self.address}/{self.prefix}")
        if self.netmask is not None:
            return ipaddress.ip_interface(f"{self.address}/{self.netmask}")
        return ipaddress.ip_interface(self.address)


class Network(XMLObject):
    TAG = "network"

    name = XMLProperty("name")
    uuid = XMLProperty("uuid")
    _forward_mode = XMLProperty("forward/@mode", choices=FORWARD_MODES[:-1])
    forward_dev = XMLProperty("forward/@dev", doc="host interface NAT/route traffic leaves by")
    bridge_name = XMLProperty("bridge/@name")
    bridge_stp = XMLProperty("bridge/@stp", kind=bool, bools=("on", "off"))
    bridge_delay = XMLProperty("bridge/@delay", kind=int, minimum=0)
    mtu = XMLProperty("mtu/@size", kind=int, minimum=68)
    mac_address = XMLProperty("mac/@address")
    domain_name = XMLProperty("domain/@name", doc="DNS domain of the guests")
    domain_local_only = XMLProperty("domain/@localOnly", kind=bool)
    ips = XMLChildList(IP)

    @property
    def forward_mode(self) -> str:
        """nat, route, open, bridge... or ``"none"``: isolated. libvirt's default mode is nat."""
        el = self._element()
        if el is None or el.find("forward") is None:
            return "none"
        return self._forward_mode or "nat"

    @forward_mode.setter
    def forward_mode(self, mode: str) -> None:
        if mode not in FORWARD_MODES:
            raise InvalidInput(
                f"forward_mode must be one of: {', '.join(FORWARD_MODES)}", field="forward_mode"
            )
        if mode == "none":
            el = self._element()
            fwd = None if el is None else el.find("forward")
            if fwd is not None:
                detach(fwd)
            return
        self._forward_mode = mode

    @property
    def isolated(self) -> bool:
        return self.forward_mode == "none"

    def ipv4(self) -> IP | None:
        """The first IPv4 ``<ip>`` (what DHCP leases and the UI show)."""
        return next((ip for ip in self.ips if (ip.family or "ipv4") == "ipv4"), None)
