"""Virtual networks: define/start/stop/autostart/delete NAT, isolated, routed and open
networks with one IPv4 subnet and a DHCP range; list them and their DHCP leases.

Every rule that can be checked before libvirt sees the XML is checked here and named by
field (a DHCP range outside the subnet, start after end, a bridge name the kernel would
refuse), so callers get a 422 that says what to fix rather than a libvirt message.
"""

from __future__ import annotations

import builtins
import contextlib
import ipaddress
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

import libvirt
from pydantic import BaseModel

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound
from kvmmanager.services.storage.specs import check_name
from kvmmanager.services.storage.xml import host_refusal
from kvmmanager.virt import readers
from kvmmanager.virt.calls import CallKind, op_name
from kvmmanager.virt.inventory import Inventory, NetworkInfo
from kvmmanager.virt.registry import HostRegistry
from kvmmanager.virt.xml.network import IP, DhcpRange, Network
from kvmmanager.virt.xml.validate import validate_xml

ForwardMode = Literal["nat", "route", "open", "isolated"]
NETWORK_NAME_MAX = 64
# Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no '/', ':' or whitespace.
BRIDGE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")
DNS_DOMAIN_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*")


class NetworkSpec(BaseModel):
    """A network to define. `address`/`prefix` is the host's address on the bridge (its
    subnet is the network's); `dhcp_start`/`dhcp_end` an optional DHCP range inside it.
    `forward_dev` restricts NAT/routed traffic to one host interface."""

    name: str
    forward: ForwardMode = "nat"
    bridge: str | None = None
    address: str | None = None
    prefix: int = 24
    dhcp_start: str | None = None
    dhcp_end: str | None = None
    forward_dev: str | None = None
    domain: str | None = None
    start: bool = True
    autostart: bool = True


@dataclass(slots=True)
class NetworkDetails:
    name: str
    uuid: str
    active: bool
    persistent: bool
    autostart: bool
    forward: str
    bridge: str | None
    address: str | None = None
    prefix: int | None = None
    dhcp_start: str | None = None
    dhcp_end: str | None = None
    forward_dev: str | None = None
    domain: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Lease:
    mac: str
    ip: str
    prefix: int | None
    hostname: str | None
    client_id: str | None
    expires: int | None
    type: str = "ipv4"
    iface: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _Checked:
    spec: NetworkSpec
    interface: ipaddress.IPv4Interface | None = None
    dhcp: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address] | None = None


def _ipv4(value: str, field_name: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value.strip())
    except (ipaddress.AddressValueError, AttributeError) as exc:
        raise InvalidInput(f"{field_name} must be an IPv4 address", field=field_name) from exc


def validate_network_spec(spec: NetworkSpec) -> _Checked:
    """Check every rule of `spec`; the error names the field to fix."""
    check_name(spec.name, "name", NETWORK_NAME_MAX)
    if spec.bridge is not None and not BRIDGE_RE.fullmatch(spec.bridge):
        raise InvalidInput(
            "bridge must be 1-15 letters, digits, '_', '.' or '-' (a Linux interface name)",
            field="bridge",
        )
    if spec.forward_dev is not None:
        if spec.forward in ("isolated", "open"):
            raise InvalidInput(
                f"forward_dev is only used by nat and route networks, not {spec.forward}",
                field="forward_dev",
            )
        if not BRIDGE_RE.fullmatch(spec.forward_dev):
            raise InvalidInput("forward_dev must be a Linux interface name", field="forward_dev")
    if spec.domain is not None and (
        len(spec.domain) > 253 or not DNS_DOMAIN_RE.fullmatch(spec.domain)
    ):
        raise InvalidInput("domain must be a DNS domain name", field="domain")
    checked = _Checked(spec)
    if spec.address is None:
        if spec.dhcp_start or spec.dhcp_end:
            raise InvalidInput("a DHCP range needs the network's address", field="address")
        if spec.forward in ("route", "open"):
            raise InvalidInput(
                f"a {spec.forward} network needs an address (the host's side of the subnet)",
                field="address",
            )
        return checked
    if not 8 <= spec.prefix <= 30:
        raise InvalidInput("prefix must be between 8 and 30", field="prefix")
    address = _ipv4(spec.address, "address")
    iface = ipaddress.IPv4Interface(f"{address}/{spec.prefix}")
    net = iface.network
    if address in (net.network_address, net.broadcast_address):
        raise InvalidInput(
            f"address {address} is the network or broadcast address of {net}", field="address"
        )
    if address.is_multicast or address.is_loopback or address.is_unspecified:
        raise InvalidInput(f"address {address} cannot be a network's address", field="address")
    checked.interface = iface
    if (spec.dhcp_start is None) != (spec.dhcp_end is None):
        missing = "dhcp_end" if spec.dhcp_end is None else "dhcp_start"
        raise InvalidInput("a DHCP range needs both dhcp_start and dhcp_end", field=missing)
    if spec.dhcp_start is not None and spec.dhcp_end is not None:
        start = _ipv4(spec.dhcp_start, "dhcp_start")
        end = _ipv4(spec.dhcp_end, "dhcp_end")
        for value, name in ((start, "dhcp_start"), (end, "dhcp_end")):
            if value not in net or value in (net.network_address, net.broadcast_address):
                raise InvalidInput(f"{name} {value} is not a host address of {net}", field=name)
        if start > end:
            raise InvalidInput(f"dhcp_start {start} is after dhcp_end {end}", field="dhcp_start")
        if start <= address <= end:
            raise InvalidInput(
                f"the DHCP range {start}-{end} contains the network's own address {address}",
                field="dhcp_start",
            )
        checked.dhcp = (start, end)
    return checked


def build_network_xml(checked: _Checked) -> str:
    """Spec -> network XML through the model; validated against libvirt's schema."""
    spec = checked.spec
    net = Network(name=spec.name)
    if spec.forward != "isolated":
        net.forward_mode = spec.forward
        if spec.forward_dev:
            net.forward_dev = spec.forward_dev
    if spec.bridge:
        net.bridge_name = spec.bridge
    if spec.domain:
        net.domain_name = spec.domain
    if checked.interface is not None:
        ip = net.add(
            IP(address=str(checked.interface.ip), prefix=checked.interface.network.prefixlen)
        )
        if checked.dhcp is not None:
            ip.add(DhcpRange(start=str(checked.dhcp[0]), end=str(checked.dhcp[1])))
    xml = net.to_xml()
    validate_xml(xml, "network")
    return xml


def _details(net: libvirt.virNetwork) -> NetworkDetails:
    model = Network.from_xml(net.XMLDesc(0))
    ip = model.ipv4()
    iface = ip.interface if ip is not None else None
    dhcp = ip.dhcp_ranges[0] if ip is not None and ip.dhcp_ranges else None
    mode = model.forward_mode
    return NetworkDetails(
        name=net.name(),
        uuid=net.UUIDString(),
        active=bool(net.isActive()),
        persistent=bool(net.isPersistent()),
        autostart=bool(net.autostart()),
        forward="isolated" if mode == "none" else mode,
        bridge=model.bridge_name,
        address=str(iface.ip) if iface is not None else None,
        prefix=iface.network.prefixlen if iface is not None else None,
        dhcp_start=dhcp.start if dhcp is not None else None,
        dhcp_end=dhcp.end if dhcp is not None else None,
        forward_dev=model.forward_dev,
        domain=model.domain_name,
    )


def _refuse_collisions(conn: libvirt.virConnect, checked: _Checked) -> None:
    """A bridge name another network has, or a subnet overlapping an active network's,
    would fail inside libvirt with a generic error: name the field instead."""
    spec = checked.spec
    for other in conn.listAllNetworks(0):
        try:
            model = Network.from_xml(other.XMLDesc(0))
            active = other.isActive()
        except libvirt.libvirtError:
            continue  # undefined meanwhile
        if spec.bridge and model.bridge_name == spec.bridge:
            raise Conflict(
                f"bridge {spec.bridge} is already used by network '{other.name()}'",
                field="bridge",
            )
        ip = model.ipv4()
        theirs = ip.interface if ip is not None else None
        mine = checked.interface
        if (
            spec.start
            and active
            and mine is not None
            and theirs is not None
            and mine.network.overlaps(theirs.network)
        ):
            raise Conflict(
                f"subnet {mine.network} overlaps {theirs.network} of the active "
                f"network '{other.name()}'",
                field="address",
            )


def _lease(raw: dict[str, Any]) -> Lease:
    kind = raw.get("type")
    return Lease(
        mac=raw.get("mac") or "",
        ip=raw.get("ipaddr") or "",
        prefix=raw.get("prefix"),
        hostname=raw.get("hostname") or None,
        client_id=raw.get("clientid") or None,
        expires=raw.get("expirytime") or None,
        type="ipv6" if kind == libvirt.VIR_IP_ADDR_TYPE_IPV6 else "ipv4",
        iface=raw.get("iface") or None,
    )


class NetworkService:
    def __init__(self, inventory: Inventory, registry: HostRegistry) -> None:
        self._inventory = inventory
        self._registry = registry

    # -- plumbing ------------------------------------------------------------------------

    def _host(self, host: str) -> Any:
        return self._registry.get(host)

    async def _call(self, host: str, fn: Any, *args: Any, kind: CallKind | None = None) -> Any:
        """Run `fn(conn, *args)` on the host's worker threads (within `kind`'s deadline)."""
        h = self._host(host)
        return await h.run(lambda: fn(h.conn, *args), kind=kind, op=op_name(fn))

    @staticmethod
    def _lookup(conn: libvirt.virConnect, name: str) -> libvirt.virNetwork:
        check_name(name, "network", NETWORK_NAME_MAX)
        try:
            return conn.networkLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                raise NotFound(f"network '{name}' not found", field="network") from exc
            raise

    async def sync(self, host: str, name: str) -> None:
        """Re-read one network into the inventory (autostart changes send no event)."""
        h = self._host(host)

        def op() -> NetworkInfo | None:
            try:
                return readers.read_network(host, h.conn.networkLookupByName(name))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                    return None
                raise

        info = await h.run(op, kind="read", op=f"re-read network '{name}'")
        if info is not None:
            self._inventory.put_network(info)

    # -- reads ---------------------------------------------------------------------------

    async def list(self, host: str) -> list[NetworkDetails]:
        def op(conn: libvirt.virConnect) -> list[NetworkDetails]:
            out = []
            for net in conn.listAllNetworks(0):
                try:
                    out.append(_details(net))
                except libvirt.libvirtError as exc:
                    # Undefined between the listing and the read: it is simply gone.
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                        raise
            return sorted(out, key=lambda d: d.name)

        return await self._call(host, op, kind="read")

    async def get(self, host: str, name: str) -> NetworkDetails:
        return await self._call(host, lambda conn: _details(self._lookup(conn, name)), kind="read")

    # builtins.list: in this class `list` names the method above.
    async def leases(self, host: str, name: str, mac: str | None = None) -> builtins.list[Lease]:
        def op(conn: libvirt.virConnect) -> list[Lease]:
            net = self._lookup(conn, name)
            if not net.isActive():
                raise Conflict(f"network '{name}' is not active", field="network")
            return [_lease(raw) for raw in net.DHCPLeases(mac, 0)]

        if mac is not None and not re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", mac):
            raise InvalidInput("mac must look like 52:54:00:12:34:56", field="mac")
        return await self._call(host, op, kind="read")

    # -- writes --------------------------------------------------------------------------

    async def define(self, host: str, spec: NetworkSpec) -> NetworkDetails:
        """Define the network; start it and mark it autostart when the spec says so. If
        starting fails the definition is removed again so the caller can fix and retry."""
        checked = validate_network_spec(spec)
        xml = build_network_xml(checked)

        def op(conn: libvirt.virConnect) -> NetworkDetails:
            try:
                conn.networkLookupByName(spec.name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                    raise
            else:
                raise Conflict(f"network '{spec.name}' already exists", field="name")
            _refuse_collisions(conn, checked)
            with host_refusal(conn, "bridge"):
                net = conn.networkDefineXML(xml)
            try:
                if spec.autostart:
                    net.setAutostart(1)
                if spec.start:
                    with host_refusal(conn, "network"):
                        net.create()
            except BaseException:
                # Best effort: the error that stopped the define is the one to report.
                with contextlib.suppress(libvirt.libvirtError):
                    if net.isActive():
                        net.destroy()
                    net.undefine()
                raise
            return _details(net)

        details = await self._call(host, op)
        await self.sync(host, spec.name)
        return details

    async def start(self, host: str, name: str) -> NetworkDetails:
        def op(conn: libvirt.virConnect) -> NetworkDetails:
            net = self._lookup(conn, name)
            if net.isActive():
                raise Conflict(f"network '{name}' is already active", field="network")
            with host_refusal(conn, "network"):
                net.create()
            return _details(net)

        details = await self._call(host, op)
        await self.sync(host, name)
        return details

    async def stop(self, host: str, name: str) -> NetworkDetails:
        def op(conn: libvirt.virConnect) -> NetworkDetails:
            net = self._lookup(conn, name)
            if not net.isActive():
                raise Conflict(f"network '{name}' is not active", field="network")
            if not net.isPersistent():
                # A transient network is gone once stopped: report its last state.
                details = _details(net)
                net.destroy()
                details.active = False
                return details
            net.destroy()
            return _details(net)

        details = await self._call(host, op)
        await self.sync(host, name)
        return details

    async def set_autostart(self, host: str, name: str, enabled: bool) -> NetworkDetails:
        def op(conn: libvirt.virConnect) -> NetworkDetails:
            net = self._lookup(conn, name)
            if not net.isPersistent():
                raise Conflict(
                    f"network '{name}' is transient: it cannot autostart", field="network"
                )
            net.setAutostart(1 if enabled else 0)
            return _details(net)

        details = await self._call(host, op)
        await self.sync(host, name)
        return details

    async def delete(self, host: str, name: str, *, force: bool = False) -> None:
        """Stop (if active) and undefine. A network a running VM is plugged into is refused
        unless `force`: stopping it would cut those VMs off."""
        running = [
            d.name
            for d in self._inventory.domains(host)
            if d.state in ("running", "paused", "blocked")
            and any(n.type == "network" and n.source == name for n in d.nics)
        ]
        if running and not force:
            raise Conflict(
                f"network '{name}' is used by running VM(s): {', '.join(running)}",
                field="network",
                details={"vms": running},
            )

        def op(conn: libvirt.virConnect) -> None:
            net = self._lookup(conn, name)
            # Asked first: a transient network no longer exists once destroyed.
            persistent = net.isPersistent()
            if net.isActive():
                net.destroy()
            if persistent:
                net.undefine()

        await self._call(host, op)
