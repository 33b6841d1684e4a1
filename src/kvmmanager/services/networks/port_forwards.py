"""Port forwards of VMs on user-mode networking with libvirt's passt backend.

    await manager.port_forwards.list("local", "vm1")
    await manager.port_forwards.add("local", "vm1", ForwardRule(proto="tcp", host_port=2222,
                                                                  guest_port=22))
    await manager.port_forwards.remove("local", "vm1", "tcp", 2222)

passt (``<interface type='user'><backend type='passt'/>``, libvirt 9.0+) listens on the
host's ports itself and forwards them into the guest, declared as ``<portForward>`` in the
interface's XML; this service edits those elements in the persistent definition. libvirt
cannot change them on a running guest, so a change applies at the next boot.

Everything else is refused, with the reason: NICs on a libvirt network (NAT) or a bridge
have their ports opened on the host itself (libvirt network hooks or nftables rules,
see docs/operations.md "Port forwarding"), which is not the VM's XML to carry; a user NIC
on QEMU's built-in slirp backend has no port forwards libvirt manages.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from typing import Any, Literal

import libvirt

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound, Unsupported
from kvmmanager.services.vms import spec as vm_spec
from kvmmanager.services.vms.edit import redefine
from kvmmanager.services.vms.service import VmService
from kvmmanager.virt.xml.devices import Interface
from kvmmanager.virt.xml.devices.interface import PortForward, PortRange
from kvmmanager.virt.xml.domain import Domain

PORT_MAX = 65535
DOCS = "docs/operations.md, section 'Port forwarding'"


@dataclass
class ForwardRule:
    """Host ports `host_port`..`host_port_end` (one port when no end) -> guest ports from
    `guest_port` on (the same numbers when none); `address` limits the host address."""

    proto: Literal["tcp", "udp"]
    host_port: int
    guest_port: int | None = None
    host_port_end: int | None = None
    address: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def last(self) -> int:
        return self.host_port_end or self.host_port


def validate_rule(rule: ForwardRule) -> ForwardRule:
    if rule.proto not in ("tcp", "udp"):
        raise InvalidInput("proto must be tcp or udp", field="proto")
    for name in ("host_port", "guest_port", "host_port_end"):
        value = getattr(rule, name)
        if value is not None and (isinstance(value, bool) or not 1 <= value <= PORT_MAX):
            raise InvalidInput(f"{name} must be between 1 and {PORT_MAX}", field=name)
    if rule.host_port_end is not None and rule.host_port_end < rule.host_port:
        raise InvalidInput("host_port_end must not be below host_port", field="host_port_end")
    span = rule.last - rule.host_port
    if rule.guest_port is not None and rule.guest_port + span > PORT_MAX:
        raise InvalidInput(
            f"guest ports {rule.guest_port}..{rule.guest_port + span} go past {PORT_MAX}",
            field="guest_port",
        )
    if rule.address is not None:
        try:
            ipaddress.ip_address(rule.address)
        except ValueError as exc:
            raise InvalidInput(
                "address must be an IP address of the host", field="address"
            ) from exc
    return rule


def _nic_text(nic: Interface) -> str:
    where = {"network": "network", "bridge": "bridge", "direct": "host device"}.get(
        nic.type or "", nic.type or "?"
    )
    return f"{nic.mac_address or '?'} ({where} {nic.source or ''})".replace(" )", ")")


def pick_interface(xml: Domain, mac: str | None) -> Interface:
    """The passt NIC to edit: the one with `mac`, else the VM's only passt NIC. Refuses
    other kinds of NIC with the reason and where the supported way is documented."""
    nics = xml.devices.interfaces
    if mac is not None:
        mac = vm_spec.validate_mac(mac, "mac")
        nics = [n for n in nics if (n.mac_address or "").lower() == mac]
        if not nics:
            raise NotFound(f"vm '{xml.name}' has no NIC with MAC {mac}", field="mac")
    passt = [n for n in nics if n.type == "user" and n.backend_type == "passt"]
    if len(passt) == 1:
        return passt[0]
    if len(passt) > 1:
        raise InvalidInput(
            f"vm '{xml.name}' has {len(passt)} passt NICs: name one by its MAC", field="mac"
        )
    slirp = [n for n in nics if n.type == "user"]
    if slirp:
        raise Unsupported(
            f"NIC {slirp[0].mac_address} of vm '{xml.name}' uses QEMU's built-in user "
            "networking (slirp), which has no port forwards libvirt manages: switch it to "
            "the passt backend (<backend type='passt'/>)",
            field="mac",
        )
    if not nics:
        raise Unsupported(
            f"vm '{xml.name}' has no NIC: port forwards need a user-mode NIC on libvirt's "
            f"passt backend; attach one with user-mode networking first (see {DOCS})",
            field="mac",
        )
    others = ", ".join(_nic_text(n) for n in nics)
    raise Unsupported(
        f"vm '{xml.name}' has no user-mode (passt) NIC; its NICs: {others}. Ports of a VM on a "
        f"NAT network or a bridge are forwarded on the host (libvirt network hook or "
        f"nftables), not in the VM's XML: see {DOCS}",
        field="mac",
    )


def forwards_of(nic: Interface) -> list[dict[str, Any]]:
    out = []
    for fwd in nic.port_forwards:
        for rng in fwd.ranges:
            out.append(
                {
                    "proto": fwd.proto,
                    "address": fwd.address,
                    "host_port": rng.start,
                    "host_port_end": rng.end,
                    "guest_port": rng.to,
                    "exclude": bool(rng.exclude),
                }
            )
    return out


def _overlaps(a: ForwardRule, existing: dict[str, Any]) -> bool:
    if existing["exclude"] or existing["proto"] != a.proto:
        return False
    if a.address and existing["address"] and a.address != existing["address"]:
        return False
    start, end = existing["host_port"], existing["host_port_end"] or existing["host_port"]
    return a.host_port <= end and start <= a.last


def add_forward(xml: Domain, mac: str | None, rule: ForwardRule) -> Interface:
    """Add `rule` to the VM's passt NIC (in `xml`); refuses a clash with a forward it has."""
    validate_rule(rule)
    nic = pick_interface(xml, mac)
    for existing in forwards_of(nic):
        if _overlaps(rule, existing):
            end = existing["host_port_end"]
            ports = f"{existing['host_port']}" + (f"-{end}" if end else "")
            raise Conflict(
                f"host {rule.proto} port {ports} is already forwarded to this VM", field="host_port"
            )
    fwd = next(
        (f for f in nic.port_forwards if f.proto == rule.proto and f.address == rule.address
         and f.dev is None),
        None,
    )  # fmt: skip
    if fwd is None:
        fwd = nic.add(PortForward(proto=rule.proto))
        if rule.address:
            fwd.address = rule.address
    rng = fwd.add(PortRange(start=rule.host_port))
    if rule.host_port_end is not None and rule.host_port_end != rule.host_port:
        rng.end = rule.host_port_end
    if rule.guest_port is not None and rule.guest_port != rule.host_port:
        rng.to = rule.guest_port
    return nic


def remove_forward(xml: Domain, mac: str | None, proto: str, host_port: int) -> Interface:
    nic = pick_interface(xml, mac)
    for fwd in nic.port_forwards:
        if fwd.proto != proto:
            continue
        for rng in fwd.ranges:
            if rng.start == host_port and not rng.exclude:
                fwd.remove(rng)
                if not fwd.ranges:
                    nic.remove(fwd)
                return nic
    raise NotFound(f"no {proto} forward of host port {host_port} on this VM", field="host_port")


def _inactive(dom: libvirt.virDomain) -> Domain:
    return Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))


def _result(dom: libvirt.virDomain, what: str, nic: Interface) -> dict[str, Any]:
    running = bool(dom.isActive())
    return {
        "applied_live": False,
        "next_boot": running,
        "message": what + ("; takes effect at the next boot" if running else ""),
        "details": {"mac": nic.mac_address, "forwards": forwards_of(nic)},
    }


class PortForwardService:
    def __init__(self, vms: VmService) -> None:
        self._vms = vms

    async def list(self, host: str, vm: str) -> list[dict[str, Any]]:
        """Every passt NIC of the VM (persistent definition) with its forwards."""

        def fn(dom: libvirt.virDomain) -> list[dict[str, Any]]:
            xml = _inactive(dom)
            return [
                {"mac": n.mac_address, "forwards": forwards_of(n)}
                for n in xml.devices.interfaces
                if n.type == "user" and n.backend_type == "passt"
            ]

        return await self._vms.run_on(host, vm, fn, kind="read")

    async def add(
        self, host: str, vm: str, rule: ForwardRule, mac: str | None = None
    ) -> dict[str, Any]:
        validate_rule(rule)

        def fn(dom: libvirt.virDomain) -> dict[str, Any]:
            self._persistent(dom)
            nic = redefine(dom, lambda xml: add_forward(xml, mac, rule))
            span = f"{rule.host_port}" + (f"-{rule.host_port_end}" if rule.host_port_end else "")
            guest = rule.guest_port or rule.host_port
            return _result(dom, f"forwarding host {rule.proto} {span} to guest port {guest}", nic)

        return await self._vms.run_on(host, vm, fn)

    async def remove(
        self, host: str, vm: str, proto: str, host_port: int, mac: str | None = None
    ) -> dict[str, Any]:
        if proto not in ("tcp", "udp"):
            raise InvalidInput("proto must be tcp or udp", field="proto")

        def fn(dom: libvirt.virDomain) -> dict[str, Any]:
            self._persistent(dom)
            nic = redefine(dom, lambda xml: remove_forward(xml, mac, proto, host_port))
            return _result(dom, f"removed the {proto} forward of host port {host_port}", nic)

        return await self._vms.run_on(host, vm, fn)

    @staticmethod
    def _persistent(dom: libvirt.virDomain) -> None:
        if not dom.isPersistent():
            raise Conflict(f"vm '{dom.name()}' is transient: nothing to edit", field="vm")
