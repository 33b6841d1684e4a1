"""From one `getAllDomainStats` record to counters, and from two counters to rates.

libvirt reports cumulative counters (CPU nanoseconds, block and interface bytes and
requests); rates come from the difference of two collections. A counter that went down
(the VM restarted, a disk was detached and re-attached under the same name) or a domain
whose id changed (a restart) gives no rate for that collection instead of a huge negative
or positive spike: the next collection starts from the new baseline. Disks and NICs are
compared device by device, so hot-plugging one never shows up as a burst of traffic.

Everything here is pure and runs in the host's worker thread.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import libvirt

# The order of the values in a sample and in the history rings.
FIELDS: tuple[str, ...] = (
    "cpu_pct",
    "mem_bytes",
    "disk_rd_bps",
    "disk_wr_bps",
    "disk_rd_iops",
    "disk_wr_iops",
    "net_rx_bps",
    "net_tx_bps",
)
NFIELDS = len(FIELDS)

STATS_FLAGS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_BLOCK
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
)
# NOWAIT: a domain busy in a long job (migration, a hung monitor) is reported without
# the stats that need its job lock, instead of holding the whole host's collection.
LIST_FLAGS = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT

STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}
ACTIVE_STATES = frozenset({"running", "blocked", "paused", "shutdown", "pmsuspended"})

# Per device: (rd_bytes, wr_bytes, rd_reqs, wr_reqs) and (rx_bytes, tx_bytes).
BlockCounters = tuple[int, int, int, int]
NetCounters = tuple[int, int]


@dataclass(slots=True)
class Counters:
    """The cumulative counters of one domain at one instant (`t` is time.monotonic())."""

    t: float
    dom_id: int
    cpu_ns: int | None = None
    block: dict[str, BlockCounters] = field(default_factory=dict)
    net: dict[str, NetCounters] = field(default_factory=dict)


@dataclass(slots=True)
class Sample:
    """One domain at one collection: state, rates (None = not known this time), totals."""

    uuid: str
    name: str
    state: str
    values: tuple[float | None, ...]
    # Cumulative totals for Prometheus counters (they reset when the VM restarts).
    cpu_seconds: float | None = None
    disk_rd_bytes: int = 0
    disk_wr_bytes: int = 0
    disk_rd_reqs: int = 0
    disk_wr_reqs: int = 0
    net_rx_bytes: int = 0
    net_tx_bytes: int = 0
    balloon_kib: int | None = None
    mem_source: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "name": self.name,
            "state": self.state,
            **dict(zip(FIELDS, self.values, strict=True)),
            "mem_source": self.mem_source,
            "balloon_kib": self.balloon_kib,
            "totals": {
                "cpu_seconds": self.cpu_seconds,
                "disk_rd_bytes": self.disk_rd_bytes,
                "disk_wr_bytes": self.disk_wr_bytes,
                "disk_rd_reqs": self.disk_rd_reqs,
                "disk_wr_reqs": self.disk_wr_reqs,
                "net_rx_bytes": self.net_rx_bytes,
                "net_tx_bytes": self.net_tx_bytes,
            },
        }


# The per-device keys of a record, built once per device index (not once per VM and
# collection: a string built on the fly is hashed again at every lookup). Profiled at
# 5,000 VMs (docs/performance.md): key building and helper calls were a third of a cycle.
# Several hosts' worker threads share them: a longer list is built whole and swapped in,
# never appended to in place.
_BLOCK_KEYS: list[tuple[str, ...]] = []
_NET_KEYS: list[tuple[str, ...]] = []
_BLOCK_FIELDS = ("name", "rd.bytes", "wr.bytes", "rd.reqs", "wr.reqs")
_NET_FIELDS = ("name", "rx.bytes", "tx.bytes")


def _keys(prefix: str, fields: tuple[str, ...], n: int) -> list[tuple[str, ...]]:
    return [tuple(f"{prefix}.{i}.{f}" for f in fields) for i in range(max(n, 8))]


def _block_keys(n: int) -> list[tuple[str, ...]]:
    global _BLOCK_KEYS
    if len(_BLOCK_KEYS) < n:
        _BLOCK_KEYS = _keys("block", _BLOCK_FIELDS, n)
    return _BLOCK_KEYS


def _net_keys(n: int) -> list[tuple[str, ...]]:
    global _NET_KEYS
    if len(_NET_KEYS) < n:
        _NET_KEYS = _keys("net", _NET_FIELDS, n)
    return _NET_KEYS


def parse_counters(stats: dict[str, Any], dom_id: int, t: float) -> Counters:
    get = stats.get
    cpu = get("cpu.time")
    c = Counters(t=t, dom_id=dom_id, cpu_ns=int(cpu) if cpu is not None else None)
    # `int(get(k) or 0)`: a missing counter (None) counts as 0, as 0 does.
    n = int(get("block.count") or 0)
    if n:
        block = c.block
        keys = _block_keys(n)
        for i in range(n):
            k_name, k_rb, k_wb, k_rr, k_wr = keys[i]
            name = get(k_name)
            # Backing-chain entries repeat a name; only the top image counts.
            if name is None or name in block:
                continue
            block[name] = (
                int(get(k_rb) or 0),
                int(get(k_wb) or 0),
                int(get(k_rr) or 0),
                int(get(k_wr) or 0),
            )
    n = int(get("net.count") or 0)
    if n:
        net = c.net
        keys_n = _net_keys(n)
        for i in range(n):
            k_name, k_rx, k_tx = keys_n[i]
            name = get(k_name)
            if name is None:
                continue
            net[name] = (int(get(k_rx) or 0), int(get(k_tx) or 0))
    return c


def memory(stats: dict[str, Any]) -> tuple[float | None, str]:
    """Memory in use in bytes: the guest's own figure when the balloon driver reports
    one (available - unused), else what the QEMU process holds on the host (rss)."""
    avail, unused = stats.get("balloon.available"), stats.get("balloon.unused")
    if avail is not None and unused is not None and avail >= unused:
        return float(avail - unused) * 1024, "guest"
    rss = stats.get("balloon.rss")
    if rss is not None:
        return float(rss) * 1024, "rss"
    return None, ""


def _device_rates(
    prev: Mapping[str, tuple[int, ...]], cur: Mapping[str, tuple[int, ...]], width: int, dt: float
) -> list[float]:
    """Per-field sum over devices present in both collections of (delta / dt); a device
    whose counters went down (re-created) is left out this once."""
    # Whole-number deltas summed first, divided once (half the work of a per-field
    # `+= delta / dt` loop, which the profile showed as the top frame).
    total: list[int] | None = None
    for name, now in cur.items():
        before = prev.get(name)
        if before is None:
            continue
        deltas = [a - b for a, b in zip(now, before, strict=True)]
        if min(deltas) < 0:
            continue
        total = deltas if total is None else [t + d for t, d in zip(total, deltas, strict=True)]
    if total is None:
        return [0.0] * width
    return [t / dt for t in total]


def rates(prev: Counters | None, cur: Counters) -> tuple[float | None, ...]:
    """(cpu_pct, disk rd/wr B/s, disk rd/wr IOPS, net rx/tx B/s); None where unknown."""
    if prev is None or prev.dom_id != cur.dom_id or cur.t <= prev.t:
        return (None,) * 7
    dt = cur.t - prev.t
    cpu: float | None = None
    if cur.cpu_ns is not None and prev.cpu_ns is not None and cur.cpu_ns >= prev.cpu_ns:
        # Percent of one host CPU, like top: 2 busy vCPUs read 200.
        cpu = (cur.cpu_ns - prev.cpu_ns) / dt / 1e7
    rd_b, wr_b, rd_r, wr_r = _device_rates(prev.block, cur.block, 4, dt)
    rx, tx = _device_rates(prev.net, cur.net, 2, dt)
    return (cpu, rd_b, wr_b, rd_r, wr_r, rx, tx)


def build_sample(
    uuid: str,
    name: str,
    stats: dict[str, Any],
    dom_id: int,
    t: float,
    prev: Counters | None,
) -> tuple[Sample, Counters | None]:
    """The sample of one domain and the counters to keep for the next collection
    (None for an inactive domain: it has no counters, the next start is a new baseline)."""
    state = STATE_NAMES.get(stats.get("state.state", 0), "nostate")
    if state not in ACTIVE_STATES:
        return Sample(uuid, name, state, (None,) * NFIELDS), None
    cur = parse_counters(stats, dom_id, t)
    cpu, rd_b, wr_b, rd_r, wr_r, rx, tx = rates(prev, cur)
    mem, source = memory(stats)
    block_totals = [sum(col) for col in zip(*cur.block.values(), strict=True)] or [0, 0, 0, 0]
    net_totals = [sum(col) for col in zip(*cur.net.values(), strict=True)] or [0, 0]
    balloon = stats.get("balloon.current")
    sample = Sample(
        uuid=uuid,
        name=name,
        state=state,
        values=(cpu, mem, rd_b, wr_b, rd_r, wr_r, rx, tx),
        cpu_seconds=cur.cpu_ns / 1e9 if cur.cpu_ns is not None else None,
        disk_rd_bytes=block_totals[0],
        disk_wr_bytes=block_totals[1],
        disk_rd_reqs=block_totals[2],
        disk_wr_reqs=block_totals[3],
        net_rx_bytes=net_totals[0],
        net_tx_bytes=net_totals[1],
        balloon_kib=int(balloon) if balloon is not None else None,
        mem_source=source,
    )
    return sample, cur


def finite(v: float | None) -> float | None:
    """Guard against NaN/inf reaching JSON or the history codec."""
    if v is None or not math.isfinite(v):
        return None
    return v
