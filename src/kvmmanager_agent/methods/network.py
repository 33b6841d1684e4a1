"""get_network_info: interfaces from /sys/class/net, addresses from a netlink dump.

Netlink (RTM_GETADDR) gives every address with its prefix length, which the ioctl
interface cannot (one IPv4 per interface) and which needs no `ip` binary in the guest.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

from .system import read_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Tuple


RTM_NEWADDR = 20
RTM_GETADDR = 22
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
IFA_ADDRESS = 1
IFA_LOCAL = 2
_HDR = struct.Struct("=IHHII")
_IFA = struct.Struct("=BBBBI")
_RTA = struct.Struct("=HH")


def _align(n: int) -> int:
    return (n + 3) & ~3


def netlink_addresses() -> List[Tuple[int, int, str]]:
    """(interface index, family, 'address/prefix') for every address of the guest."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
    out: List[Tuple[int, int, str]] = []
    try:
        sock.settimeout(2.0)
        req = _HDR.pack(_HDR.size + _IFA.size, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        sock.send(req + _IFA.pack(socket.AF_UNSPEC, 0, 0, 0, 0))
        done = False
        while not done:
            data = sock.recv(65536)
            if not data:
                break
            off = 0
            while off + _HDR.size <= len(data):
                length, mtype, _flags, _seq, _pid = _HDR.unpack_from(data, off)
                if length < _HDR.size:
                    return out
                if mtype in (NLMSG_DONE, NLMSG_ERROR):
                    done = True
                    break
                if mtype == RTM_NEWADDR:
                    out.extend(_parse_addr(data[off + _HDR.size : off + length]))
                off += _align(length)
    finally:
        sock.close()
    return out


def _parse_addr(msg: bytes) -> List[Tuple[int, int, str]]:
    if len(msg) < _IFA.size:
        return []
    family, prefix, _flags, _scope, index = _IFA.unpack_from(msg, 0)
    attrs = {}
    off = _IFA.size
    while off + _RTA.size <= len(msg):
        alen, atype = _RTA.unpack_from(msg, off)
        if alen < _RTA.size:
            break
        attrs[atype] = msg[off + _RTA.size : off + alen]
        off += _align(alen)
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if family == socket.AF_INET and raw and len(raw) == 4:
        return [(index, family, "%s/%d" % (ipaddress.IPv4Address(raw), prefix))]
    if family == socket.AF_INET6 and raw and len(raw) == 16:
        return [(index, family, "%s/%d" % (ipaddress.IPv6Address(raw), prefix))]
    return []


def _proc_ipv6() -> List[Tuple[int, int, str]]:
    # Fallback when netlink is unavailable (restricted sandboxes).
    out: List[Tuple[int, int, str]] = []
    for line in read_text("/proc/net/if_inet6").splitlines():
        f = line.split()
        if len(f) >= 6:
            addr = ipaddress.IPv6Address(bytes.fromhex(f[0]))
            out.append((int(f[1], 16), socket.AF_INET6, "%s/%d" % (addr, int(f[2], 16))))
    return out


def interfaces() -> List[Dict[str, Any]]:
    try:
        addrs = netlink_addresses()
    except OSError:
        addrs = _proc_ipv6()
    out = []
    for index, name in sorted(socket.if_nameindex()):
        base = os.path.join("/sys/class/net", name)
        mtu = read_text(os.path.join(base, "mtu")).strip()
        out.append(
            {
                "name": name,
                "index": index,
                "mac_address": read_text(os.path.join(base, "address")).strip(),
                "ipv4_addresses": [a for i, f, a in addrs if i == index and f == socket.AF_INET],
                "ipv6_addresses": [a for i, f, a in addrs if i == index and f == socket.AF_INET6],
                "state": read_text(os.path.join(base, "operstate")).strip() or "unknown",
                "mtu": int(mtu) if mtu.isdigit() else 0,
            }
        )
    return out


def get_network_info(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    return {"interfaces": interfaces()}


HANDLERS = {"get_network_info": get_network_info}
