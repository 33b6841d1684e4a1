"""Stock qemu-guest-agent, through libvirt's own agent APIs only.

For VMs whose `org.qemu.guest_agent.0` channel is connected: interface addresses from
the agent source, guestInfo (OS, hostname, timezone, users, filesystems), fsInfo as a
fallback, getTime, and shutdown/reboot/freeze in agent mode. `qemuAgentCommand` is used
only for guest-ping, which has no libvirt API. These functions are blocking: call them
through `HostConnection.run`.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import libvirt

from kvmmanager.agent.models import (
    GuestFilesystem,
    GuestInfo,
    GuestInterface,
    GuestUser,
    clean_float,
    clean_int,
    clean_str,
)
from kvmmanager.core.errors import GuestError

MAX_ITEMS = 256


def _count(info: dict[str, Any], key: str) -> int:
    n = clean_int(info.get(key)) or 0
    return max(0, min(n, MAX_ITEMS))


def interfaces(
    dom: libvirt.virDomain, source: int = libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT
) -> list[GuestInterface]:
    """The guest's interfaces as libvirt reports them from `source`: qemu-ga (default), or
    the DHCP leases of libvirt's networks (SRC_LEASE), which need no agent at all."""
    raw = dom.interfaceAddresses(source, 0) or {}
    out = []
    for name, data in list(raw.items())[:MAX_ITEMS]:
        if not isinstance(data, dict):
            continue
        v4: list[str] = []
        v6: list[str] = []
        for a in (data.get("addrs") or [])[:MAX_ITEMS]:
            addr = clean_str(a.get("addr"), 64)
            if not addr:
                continue
            cidr = f"{addr}/{clean_int(a.get('prefix')) or 0}"
            (v4 if a.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4 else v6).append(cidr)
        out.append(
            GuestInterface(
                name=clean_str(name, 64) or "",
                mac_address=clean_str(data.get("hwaddr"), 64),
                ipv4_addresses=v4,
                ipv6_addresses=v6,
            )
        )
    return out


def _guest_info(dom: libvirt.virDomain) -> dict[str, Any]:
    try:
        return dom.guestInfo(0, 0) or {}
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return {}
        raise


def _filesystems(dom: libvirt.virDomain, info: dict[str, Any]) -> list[GuestFilesystem]:
    n = _count(info, "fs.count")
    if n:
        out = []
        for i in range(n):
            p = f"fs.{i}."
            total, used = (
                clean_int(info.get(p + "total-bytes")),
                clean_int(info.get(p + "used-bytes")),
            )
            out.append(
                GuestFilesystem(
                    mount_point=clean_str(info.get(p + "mountpoint"), 1024) or "",
                    device=clean_str(info.get(p + "name"), 1024),
                    fs_type=clean_str(info.get(p + "fstype"), 64),
                    total_bytes=total,
                    used_bytes=used,
                    available_bytes=total - used
                    if total is not None and used is not None
                    else None,
                    used_percent=round(100.0 * used / total, 1)
                    if total and used is not None
                    else None,
                )
            )
        return out
    with contextlib.suppress(libvirt.libvirtError):
        return [
            GuestFilesystem(
                mount_point=clean_str(mp, 1024) or "",
                device=clean_str(name, 1024),
                fs_type=clean_str(fstype, 64),
            )
            for mp, name, fstype, *_ in (dom.fsInfo(0) or [])[:MAX_ITEMS]
        ]
    return []


def _users(info: dict[str, Any]) -> list[GuestUser]:
    out = []
    for i in range(_count(info, "user.count")):
        name = clean_str(info.get(f"user.{i}.name"), 64)
        if name:
            ms = clean_float(info.get(f"user.{i}.login-time"))
            out.append(GuestUser(user=name, login_time=ms / 1000 if ms is not None else None))
    return out


def guest_info(dom: libvirt.virDomain) -> GuestInfo:
    info = _guest_info(dom)
    hostname = clean_str(info.get("hostname"))
    if hostname is None:
        with contextlib.suppress(libvirt.libvirtError):
            hostname = clean_str(dom.hostname(libvirt.VIR_DOMAIN_GET_HOSTNAME_AGENT))
    guest_time = None
    with contextlib.suppress(libvirt.libvirtError):
        t = dom.getTime(0)
        guest_time = (clean_int(t.get("seconds")) or 0) + (clean_int(t.get("nseconds")) or 0) / 1e9
    ifaces: list[GuestInterface] = []
    with contextlib.suppress(libvirt.libvirtError):
        ifaces = interfaces(dom)
    return GuestInfo(
        source="qga",
        os_name=clean_str(info.get("os.pretty-name") or info.get("os.name")),
        os_version=clean_str(info.get("os.version-id"), 64),
        os_id=clean_str(info.get("os.id"), 64),
        kernel_version=clean_str(info.get("os.kernel-release")),
        architecture=clean_str(info.get("os.machine"), 64),
        hostname=hostname,
        timezone=clean_str(info.get("timezone.name"), 64),
        interfaces=ifaces,
        filesystems=_filesystems(dom, info),
        users=_users(info),
        guest_time=guest_time,
    )


def ping(dom: libvirt.virDomain, timeout: int = 5) -> bool:
    import libvirt_qemu

    reply = libvirt_qemu.qemuAgentCommand(dom, json.dumps({"execute": "guest-ping"}), timeout, 0)
    try:
        return "return" in json.loads(reply)
    except (TypeError, ValueError):
        raise GuestError("qemu-guest-agent sent an invalid reply to guest-ping") from None


def shutdown(dom: libvirt.virDomain) -> None:
    dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT)


def reboot(dom: libvirt.virDomain) -> None:
    dom.reboot(libvirt.VIR_DOMAIN_REBOOT_GUEST_AGENT)


def fsfreeze(dom: libvirt.virDomain) -> int:
    frozen: int = dom.fsFreeze(None, 0)
    return frozen


def fsthaw(dom: libvirt.virDomain) -> int:
    thawed: int = dom.fsThaw(None, 0)
    return thawed


def set_time(dom: libvirt.virDomain, seconds: float) -> None:
    dom.setTime({"seconds": int(seconds), "nseconds": int((seconds % 1) * 1e9)}, 0)
