"""GuestInfo: the one model of what a guest says about itself, whichever agent answered.

Guest data is untrusted: every string is cut to a sane length and stripped of control
characters, every list is capped, numbers must be numbers, before it reaches a page,
a log or the API.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

MAX_STR = 256
MAX_ITEMS = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_str(value: Any, limit: int = MAX_STR) -> str | None:
    if value is None:
        return None
    return _CONTROL.sub("", str(value))[:limit]


def clean_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value != value or abs(value) > 2**63:
        return None
    return int(value)


def clean_float(value: Any) -> float | None:
    v = clean_int(value)
    return float(value) if v is not None else None


def clean_list(value: Any) -> list[Any]:
    return list(value)[:MAX_ITEMS] if isinstance(value, list) else []


class GuestInterface(BaseModel):
    name: str
    mac_address: str | None = None
    ipv4_addresses: list[str] = Field(default_factory=list)
    ipv6_addresses: list[str] = Field(default_factory=list)
    state: str | None = None
    mtu: int | None = None


class GuestFilesystem(BaseModel):
    mount_point: str
    device: str | None = None
    fs_type: str | None = None
    total_bytes: int | None = None
    used_bytes: int | None = None
    available_bytes: int | None = None
    used_percent: float | None = None


class GuestUser(BaseModel):
    user: str
    terminal: str | None = None
    host: str | None = None
    login_time: float | None = None


class GuestInfo(BaseModel):
    source: Literal["kvmm", "qga", "none"]
    agent_version: str | None = None
    os_name: str | None = None
    os_version: str | None = None
    os_id: str | None = None
    kernel_version: str | None = None
    hostname: str | None = None
    architecture: str | None = None
    timezone: str | None = None
    cpu_count: int | None = None
    total_memory_kb: int | None = None
    uptime_seconds: float | None = None
    interfaces: list[GuestInterface] = Field(default_factory=list)
    filesystems: list[GuestFilesystem] = Field(default_factory=list)
    users: list[GuestUser] = Field(default_factory=list)
    guest_time: float | None = None
    collected_at: float = Field(default_factory=time.time)


def _addrs(value: Any) -> list[str]:
    return [s for s in (clean_str(a, 64) for a in clean_list(value)) if s]


def interface_from_kvmm(d: Any) -> GuestInterface | None:
    if not isinstance(d, dict) or not d.get("name"):
        return None
    return GuestInterface(
        name=clean_str(d["name"], 64) or "",
        mac_address=clean_str(d.get("mac_address"), 64),
        ipv4_addresses=_addrs(d.get("ipv4_addresses")),
        ipv6_addresses=_addrs(d.get("ipv6_addresses")),
        state=clean_str(d.get("state"), 32),
        mtu=clean_int(d.get("mtu")),
    )


def filesystem_from_kvmm(d: Any) -> GuestFilesystem | None:
    if not isinstance(d, dict) or not d.get("mount_point"):
        return None
    return GuestFilesystem(
        mount_point=clean_str(d["mount_point"], 1024) or "",
        device=clean_str(d.get("device"), 1024),
        fs_type=clean_str(d.get("fs_type"), 64),
        total_bytes=clean_int(d.get("total_bytes")),
        used_bytes=clean_int(d.get("used_bytes")),
        available_bytes=clean_int(d.get("available_bytes")),
        used_percent=clean_float(d.get("used_percent")),
    )


def user_from_kvmm(d: Any) -> GuestUser | None:
    if not isinstance(d, dict) or not d.get("user"):
        return None
    return GuestUser(
        user=clean_str(d["user"], 64) or "",
        terminal=clean_str(d.get("terminal"), 64),
        host=clean_str(d.get("host")),
        login_time=clean_float(d.get("login_time")),
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def guest_info_from_kvmm(
    agent: Any, system: Any, network: Any, disks: Any, users: Any, clock: Any
) -> GuestInfo:
    agent, system, clock = _dict(agent), _dict(system), _dict(clock)
    ifaces = [interface_from_kvmm(i) for i in clean_list(_dict(network).get("interfaces"))]
    fss = [filesystem_from_kvmm(f) for f in clean_list(_dict(disks).get("filesystems"))]
    us = [user_from_kvmm(u) for u in clean_list(_dict(users).get("users"))]
    return GuestInfo(
        source="kvmm",
        agent_version=clean_str(agent.get("version"), 64),
        os_name=clean_str(system.get("os_name")),
        os_version=clean_str(system.get("os_version"), 64),
        os_id=clean_str(system.get("os_id"), 64),
        kernel_version=clean_str(system.get("kernel_version")),
        hostname=clean_str(system.get("hostname")),
        architecture=clean_str(system.get("architecture"), 64),
        timezone=clean_str(system.get("timezone"), 64),
        cpu_count=clean_int(system.get("cpu_count")),
        total_memory_kb=clean_int(system.get("total_memory_kb")),
        # `uptime` (float) is the precise one; the original's `uptime_seconds` is an
        # integer (and older agents of ours sent a float there).
        uptime_seconds=clean_float(system.get("uptime", system.get("uptime_seconds"))),
        interfaces=[i for i in ifaces if i is not None],
        filesystems=[f for f in fss if f is not None],
        users=[u for u in us if u is not None],
        guest_time=clean_float(clock.get("timestamp")),
    )
