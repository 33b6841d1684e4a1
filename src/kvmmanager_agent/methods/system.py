"""ping, sync, get_agent_info, get_system_info, get_disk_usage."""

from __future__ import annotations

import os
import sys
import time

from .. import __version__, protocol
from ..errors import invalid

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List


PSEUDO_FS = {
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
    "devtmpfs", "efivarfs", "fusectl", "hugetlbfs", "mqueue", "nsfs", "proc", "pstore",
    "ramfs", "rpc_pipefs", "securityfs", "selinuxfs", "sysfs", "tmpfs", "tracefs",
}  # fmt: skip


def ping(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    now = time.time()
    # The original protocol's `timestamp` is integer seconds; milliseconds are new.
    return {"pong": True, "timestamp": int(now), "timestamp_ms": int(now * 1000)}


def sync(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    # The 0xFF byte that precedes this reply is written by the transport.
    return {"nonce": params["nonce"]}


def get_agent_info(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    wanted = params["protocol_version"]
    if wanted < protocol.MIN_PROTOCOL_VERSION:
        raise invalid(
            "protocol_version %d is older than the oldest supported (%d)"
            % (wanted, protocol.MIN_PROTOCOL_VERSION),
            "protocol_version",
        )
    cfg = ctx.config
    return {
        "version": __version__,
        # The original's field: the version string of the protocol it documents.
        "protocol_version": protocol.ORIGINAL_PROTOCOL_VERSION,
        "negotiated_protocol_version": min(wanted, protocol.PROTOCOL_VERSION),
        "max_protocol_version": protocol.PROTOCOL_VERSION,
        "platform": sys.platform,
        "python_version": sys.version.split()[0],
        "capabilities": cfg.capabilities(),
        "limits": {
            "max_line_bytes": cfg.max_line_bytes,
            "max_concurrent_requests": cfg.max_concurrent_requests,
            "requests_per_second": cfg.requests_per_second,
            "requests_burst": cfg.requests_burst,
            "max_chunk_bytes": protocol.MAX_CHUNK_BYTES,
            "max_file_bytes": cfg.max_file_bytes,
        },
    }


def read_text(path: str, default: str = "") -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return default


def os_release() -> Dict[str, str]:
    text = read_text("/etc/os-release") or read_text("/usr/lib/os-release")
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip().strip("\"'")
    return out


def meminfo() -> Dict[str, int]:
    out = {}
    for line in read_text("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            out[key] = int(fields[0])
    return out


def uptime_seconds() -> float:
    text = read_text("/proc/uptime").split()
    return float(text[0]) if text else 0.0


def timezone_name() -> str:
    tz = read_text("/etc/timezone").strip()
    if tz:
        return tz
    try:
        link = os.readlink("/etc/localtime")
        if "zoneinfo/" in link:
            return link.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    return time.tzname[0]


def get_system_info(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    rel = os_release()
    uname = os.uname()
    uptime = uptime_seconds()
    return {
        "os_type": sys.platform if sys.platform != "linux" else "linux",
        "os_name": rel.get("PRETTY_NAME") or rel.get("NAME") or uname.sysname,
        "os_version": rel.get("VERSION_ID", ""),
        "os_id": rel.get("ID", ""),
        "kernel_version": uname.release,
        "hostname": uname.nodename,
        "architecture": uname.machine,
        "cpu_count": os.cpu_count() or 1,
        "total_memory_kb": meminfo().get("MemTotal", 0),
        "uptime_seconds": int(uptime),
        "uptime": uptime,
        "timezone": timezone_name(),
    }


def _unescape(field: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as \ooo.
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> List[Dict[str, Any]]:
    seen = set()
    out = []
    for line in read_text("/proc/self/mounts").splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        device, mount_point, fs_type = (_unescape(f) for f in fields[:3])
        if fs_type in PSEUDO_FS or mount_point in seen:
            continue
        seen.add(mount_point)
        options = fields[3].split(",") if len(fields) > 3 else []
        out.append(
            {
                "device": device,
                "mount_point": mount_point,
                "fs_type": fs_type,
                "read_only": "ro" in options,
            }
        )
    return out


def filesystems() -> List[Dict[str, Any]]:
    out = []
    for m in mounts():
        try:
            st = os.statvfs(m["mount_point"])
        except OSError:
            continue
        total = st.f_blocks * st.f_frsize
        if total == 0:
            continue
        avail = st.f_bavail * st.f_frsize
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        # Same definition as df: used / (used + available to users).
        pct = round(100.0 * used / (used + avail), 1) if used + avail else 0.0
        entry: Dict[str, Any] = dict(m)
        entry.update(total_bytes=total, used_bytes=used, available_bytes=avail, used_percent=pct)
        out.append(entry)
    return out


def get_disk_usage(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    return {"filesystems": filesystems()}


HANDLERS = {
    "ping": ping,
    "sync": sync,
    "get_agent_info": get_agent_info,
    "get_system_info": get_system_info,
    "get_disk_usage": get_disk_usage,
}
