"""Where the manager may send things it is told to send (webhooks, alert e-mail).

A webhook URL or an SMTP host is chosen by an admin of the manager, and the manager
reports back what the far end answered (status, error text): without a check it is a
probe into the manager's own network, its loopback services and the cloud metadata
address (SSRF). Every address a target's name resolves to must be a global unicast one;
loopback, link-local, private, shared, reserved, multicast and unspecified ranges are
refused unless a network is listed in `outbound.allow_networks`. The connection then goes
to the address that was checked, so the name cannot resolve to another address between
the check and the connect (DNS rebinding).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from kvmmanager.core.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ALLOW_SETTING = "outbound.allow_networks"


class Unresolvable(InvalidInput):
    """The target's name has no address (now)."""


@dataclass(frozen=True, slots=True)
class Destination:
    """A checked target: connect to `address`, speak to it as `host` (Host header, SNI)."""

    host: str
    address: str
    port: int


def _kind(ip: IPAddress) -> str | None:
    """Why `ip` is not a public destination, or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for name, flag in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return name
    return None if ip.is_global else "non-global"


class OutboundPolicy:
    def __init__(self, allow_networks: Iterable[str] = ()) -> None:
        self.allowed: list[IPNetwork] = []
        for text in allow_networks:
            try:
                self.allowed.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise InvalidInput(
                    f"{ALLOW_SETTING}: {text!r} is not a network (e.g. 10.0.0.0/8)",
                    field=ALLOW_SETTING,
                ) from None

    def refusal(self, address: str) -> str | None:
        """The kind of address (`loopback`, `private`...) when the manager must not
        connect to `address`, else None."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        kind = _kind(ip)
        if kind is None or any(ip in net for net in self.allowed):
            return None
        return kind

    def check_addresses(self, host: str, addresses: Iterable[str], field: str) -> str:
        """The first of `addresses` (what `host` resolved to) once every one is allowed."""
        ordered = list(dict.fromkeys(addresses))
        if not ordered:
            raise Unresolvable(f"{field}: {host!r} has no address", field=field)
        for address in ordered:
            kind = self.refusal(address)
            if kind is not None:
                what = (
                    f"{address} is a {kind} address"
                    if host == address
                    else f"{host!r} resolves to {address}, a {kind} address"
                )
                raise InvalidInput(
                    f"{field}: {what}; an admin can allow its network in {ALLOW_SETTING}",
                    field=field,
                )
        return ordered[0]

    def resolve(self, host: str, port: int, field: str) -> Destination:
        """Blocking: resolve `host`, check every address, pin the first one."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise Unresolvable(f"{field}: cannot resolve {host!r}: {exc}", field=field) from None
        address = self.check_addresses(host, (str(info[4][0]) for info in infos), field)
        return Destination(host=host, address=address, port=port)

    def check_at_creation(self, host: str, port: int, field: str) -> None:
        """Refuse a target that is internal now; a name that does not resolve yet is
        accepted (it is checked again, and pinned, at every delivery)."""
        with contextlib.suppress(Unresolvable):
            self.resolve(host, port, field)
