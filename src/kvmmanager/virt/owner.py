"""Which manager process made a transient helper (a probe guest), and is it still alive?

Helpers the manager starts and means to remove again carry their owner in their name:
machine, boot, PID and the PID's start time. Several managers (and test runs) share one
libvirtd, so a helper is only ever removed when that is provably right:

- it is this process's own and no operation of this process still uses it; or
- its owner ran on this machine in this boot and is gone: its PID no longer exists, or
  was reused by another process (its start time differs).

A helper of a manager on another machine or from another boot (machine ids are copied
with container images, so only the boot id tells machines apart there), or named
without an owner (older versions), is never touched: nothing here proves it abandoned.
A reboot of this machine ended its local helpers anyway.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

_TAG_RE = re.compile(r"^([0-9a-f]{8})-([0-9a-f]{8})-(\d+)-(\d+)$")


@dataclass(frozen=True)
class Owner:
    machine: str  # 8 hex digits of the machine id
    boot: str  # 8 hex digits of the boot id
    pid: int
    start: int  # the PID's start time, clock ticks after boot (/proc/PID/stat field 22)

    @property
    def tag(self) -> str:
        return f"{self.machine}-{self.boot}-{self.pid}-{self.start}"

    @classmethod
    def parse(cls, tag: str) -> Owner | None:
        m = _TAG_RE.match(tag)
        if m is None:
            return None
        return cls(m[1], m[2], int(m[3]), int(m[4]))


def _machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if re.fullmatch(r"[0-9a-f]{32}", text):
            return text[:8]
    # No machine id (some containers): the host name is the next best stable name.
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:8]
    except OSError:
        return "00000000"


def process_start(pid: int) -> int | None:
    """The PID's start time in clock ticks after boot; None when there is no such PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count after its end.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


@functools.cache
def this_process() -> Owner:
    pid = os.getpid()
    return Owner(_machine_id(), _boot_id(), pid, process_start(pid) or 0)


def is_abandoned(owner: Owner, *, in_use: bool) -> bool:
    """True only when the helper provably belongs to nobody alive (see the module doc).
    `in_use`: this process still uses the helper (only asked of its own helpers)."""
    me = this_process()
    if owner.machine != me.machine or owner.boot != me.boot:
        return False
    if owner == me:
        return not in_use
    return process_start(owner.pid) != owner.start
