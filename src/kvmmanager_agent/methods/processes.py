"""list_processes from /proc (no ps binary needed)."""

from __future__ import annotations

import os
import pwd

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Optional


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _read(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as fh:
            return fh.read(65536)
    except OSError:
        return None


def _user(uid: int, cache: Dict[int, str]) -> str:
    if uid not in cache:
        try:
            cache[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            cache[uid] = str(uid)
    return cache[uid]


def process(pid: str, users: Dict[int, str]) -> Optional[Dict[str, Any]]:
    stat = _read("/proc/%s/stat" % pid)
    if stat is None:
        return None  # exited while we listed
    # comm may contain spaces and parentheses: it ends at the LAST ')'.
    head, _, tail = stat.partition(b" (")
    comm, _, rest = tail.rpartition(b") ")
    fields = rest.split()
    if len(fields) < 20:
        return None
    rss_kb, uid = 0, -1
    for line in (_read("/proc/%s/status" % pid) or b"").splitlines():
        if line.startswith(b"VmRSS:"):
            rss_kb = int(line.split()[1])
        elif line.startswith(b"Uid:"):
            uid = int(line.split()[1])
    cmdline = (_read("/proc/%s/cmdline" % pid) or b"").replace(b"\x00", b" ").strip()
    return {
        "pid": int(head),
        "ppid": int(fields[1]),
        "user": _user(uid, users) if uid >= 0 else "",
        "name": comm.decode("utf-8", "replace"),
        "state": fields[0].decode("ascii", "replace"),
        "rss_kb": rss_kb,
        "cmdline": cmdline.decode("utf-8", "replace")[:4096],
        "start_seconds": int(fields[19]) / _TICKS,
    }


def list_processes(ctx: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    users: Dict[int, str] = {}
    procs = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            p = process(pid, users)
            if p is not None:
                procs.append(p)
    procs.sort(key=lambda p: p["rss_kb"], reverse=True)
    return {"processes": procs[: params["limit"]], "total": len(procs)}


HANDLERS = {"list_processes": list_processes}
