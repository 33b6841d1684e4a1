"""Benchmark 2: the cost of one stats collection per host, beside `virsh domstats`.

Three views, each labelled in the table:
- test driver, N domains: one collection (`collect_blocking`: the bulk getAllDomainStats
  call, parsing, rates, history codes) timed in this process, against `virsh -c <same
  URI> domstats` with the same stats groups (as a process, and per extra call inside one
  virsh session). The test driver reports only the state group, so this is the floor.
- synthetic qemu-shaped records (CPU, balloon, 2 disks, 1 NIC per domain, the keys
  qemu:///system returns): the parsing + rates + history cost at N domains, plus the
  event-loop side (storing into the rings), as CPU seconds per cycle and as % of one
  core at the default 2 s interval (target: < 5 % at 1,000 VMs).
- qemu:///system with the domains that happen to exist (real records), when reachable.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import libvirt
from common import Row, median, ms, ratio
from testdriver import uri, write_node

from kvmmanager.services.metrics.history import DownsampledRing, FullRing
from kvmmanager.services.metrics.service import HostMetrics, MetricsService, collect_blocking

GROUPS = "--state --cpu-total --balloon --block --interface --nowait"
INTERVAL = 2.0


class _Host:
    def __init__(self, conn: Any) -> None:
        self.conn = conn


class _Dom:
    def __init__(self, i: int) -> None:
        self.i = i
        self.uuid = f"6b766d6d-0000-4000-8000-{i:012x}"

    def UUIDString(self) -> str:
        return self.uuid

    def name(self) -> str:
        return f"kvmm-t-met-b{self.i:05d}"

    def ID(self) -> int:
        return self.i + 1


class _SyntheticConn:
    """Returns qemu-shaped records whose counters grow on every call."""

    def __init__(self, n: int) -> None:
        self.doms = [_Dom(i) for i in range(n)]
        self.k = 0

    def getAllDomainStats(self, stats: int, flags: int) -> list[tuple[Any, dict[str, Any]]]:
        self.k += 1
        k = self.k
        out = []
        for d in self.doms:
            r: dict[str, Any] = {
                "state.state": 1,
                "state.reason": 1,
                "cpu.time": k * 10**9 + d.i,
                "cpu.user": k * 10**8,
                "cpu.system": k * 10**8,
                "balloon.current": 1048576,
                "balloon.maximum": 1048576,
                "balloon.rss": 400000 + k,
                "net.count": 1,
                "net.0.name": "vnet0",
                "net.0.rx.bytes": k * 1000,
                "net.0.rx.pkts": k,
                "net.0.tx.bytes": k * 500,
                "net.0.tx.pkts": k,
                "block.count": 2,
            }
            for b, name in enumerate(("vda", "sda")):
                p = f"block.{b}."
                r |= {
                    p + "name": name,
                    p + "path": f"/var/lib/libvirt/images/{d.i}-{b}.qcow2",
                    p + "rd.reqs": k * 3,
                    p + "rd.bytes": k * 4096,
                    p + "rd.times": k,
                    p + "wr.reqs": k * 2,
                    p + "wr.bytes": k * 8192,
                    p + "wr.times": k,
                    p + "fl.reqs": k,
                    p + "fl.times": k,
                    p + "allocation": 1 << 30,
                    p + "capacity": 10 << 30,
                    p + "physical": 1 << 30,
                }
            out.append((d, r))
        return out


def _service() -> MetricsService:
    cfg = SimpleNamespace(interval_seconds=INTERVAL, prometheus_token="", persist=False)
    # The cycle measured is collect + _apply with persist off: it reads no database,
    # inventory, registry, lease or agent service, so none is built (a whole Manager would
    # add its start-up to a benchmark of one stats cycle).
    return MetricsService(cfg, None, None, None, None, None)  # type: ignore[arg-type]


def cycles(conn: Any, n_cycles: int) -> tuple[list[float], list[float], list[float]]:
    """(wall per cycle, CPU per cycle incl. storing, CPU of the worker-thread part)."""
    svc = _service()
    hm = HostMetrics("bench", FullRing(svc.capacity), DownsampledRing())
    host = _Host(conn)
    walls, cpus, thread_cpus = [], [], []
    for _ in range(n_cycles + 1):
        c0, t0 = time.thread_time(), time.perf_counter()
        result = collect_blocking(host, hm.counters)  # type: ignore[arg-type]
        svc._apply(hm, result)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.thread_time() - c0)
        thread_cpus.append(result.cpu_seconds)
    # The first cycle has no baseline and allocates the rings: report steady state.
    return walls[1:], cpus[1:], thread_cpus[1:]


def _virsh(u: str, commands: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(["virsh", "-c", u, commands], check=True, capture_output=True, timeout=120)
    return time.perf_counter() - t0


def virsh_domstats(u: str, runs: int = 3, session: int = 6) -> tuple[float, float]:
    process = median([_virsh(u, f"domstats {GROUPS}") for _ in range(runs)])
    many = _virsh(u, "; ".join([f"domstats {GROUPS}"] * session))
    return process, max(0.0, (many - process) / (session - 1))


def core_pct(cpu: float) -> str:
    return f"{cpu / INTERVAL * 100:.2f} % of a core"


def run(
    workdir: Path,
    sizes: tuple[int, ...] = (1000, 5000),
    n_cycles: int = 5,
    system: bool = True,
) -> list[Row]:
    rows: list[Row] = []
    for n in sizes:
        u = uri(write_node(workdir / f"node-{n}.xml", n))
        conn = libvirt.open(u)
        try:
            walls, cpus, _ = cycles(conn, n_cycles)
        finally:
            conn.close()
        v_proc, v_call = virsh_domstats(u)
        label = f"2 stats cycle ({n} VMs)"
        rows += [
            Row(
                label,
                "test driver: one collection, wall (CPU) vs virsh domstats (process)",
                f"{ms(median(walls))} ({ms(median(cpus))})",
                ms(v_proc),
                ratio(median(walls), v_proc),
            ),
            Row(
                label,
                "test driver: vs one more domstats in a virsh session",
                ms(median(walls)),
                ms(v_call),
                ratio(median(walls), v_call),
            ),
        ]
        _, s_cpus, _ = cycles(_SyntheticConn(n), n_cycles)
        target = "< 5 % of one core at 2 s" if n == 1000 else ""
        rows.append(
            Row(
                label,
                "qemu-shaped records: CPU per cycle (parse, rates, rings)",
                f"{ms(median(s_cpus))} = {core_pct(median(s_cpus))}",
                "",
                "",
                target,
            )
        )
    if not system:
        return rows
    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError:
        return rows
    try:
        n = len(conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE))
        walls, _, _ = cycles(conn, n_cycles)
    finally:
        conn.close()
    v_proc, v_call = virsh_domstats("qemu:///system")
    rows.append(
        Row(
            f"2 stats cycle (qemu:///system, {n} running)",
            "one collection vs virsh domstats in a session",
            ms(median(walls)),
            ms(v_call),
            ratio(median(walls), v_call),
        )
    )
    return rows
