"""Benchmark 1: REST list of VMs (GET /api/vms) at N test-driver domains, beside
`virsh -c <same URI> list --all` in the same run.

The server runs in its own process (bench/server.py) over a keep-alive HTTP connection,
as a client would see it. virsh is timed two ways: as a process (what a script pays:
start, open the URI, list) and per extra `list --all` inside one virsh session (the
listing alone), so neither side is flattered.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
from common import Row, median, ms, pct, ratio
from server import Server
from testdriver import uri, write_node

CALLS = {1000: 100, 5000: 30}
VIRSH_RUNS = 3
VIRSH_SESSION_LISTS = 20


def time_rest(srv: Server, calls: int) -> list[float]:
    out = []
    with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=60) as c:
        for _ in range(3):
            c.get("/api/vms").raise_for_status()
        for _ in range(calls):
            t0 = time.perf_counter()
            r = c.get("/api/vms")
            dt = time.perf_counter() - t0
            r.raise_for_status()
            out.append(dt)
    return out


def _virsh(u: str, commands: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(["virsh", "-c", u, commands], check=True, capture_output=True, timeout=120)
    return time.perf_counter() - t0


def time_virsh(u: str) -> tuple[float, float]:
    """(median seconds of one `virsh list --all` process, seconds per extra list inside one
    session)."""
    process = [_virsh(u, "list --all") for _ in range(VIRSH_RUNS)]
    session = _virsh(u, "; ".join(["list --all"] * VIRSH_SESSION_LISTS))
    per_list = max(0.0, (session - median(process)) / (VIRSH_SESSION_LISTS - 1))
    return median(process), per_list


def run(
    workdir: Path, sizes: tuple[int, ...] = (1000, 5000), calls: dict[int, int] | None = None
) -> list[Row]:
    rows: list[Row] = []
    for n in sizes:
        u = uri(write_node(workdir / f"node-{n}.xml", n))
        with Server(u, workdir, n) as srv:
            times = time_rest(srv, (calls or CALLS).get(n, 20))
        body_vms = n
        virsh_proc, virsh_list = time_virsh(u)
        p50, p99 = median(times), pct(times, 99)
        target = "p50 < 25 ms, p99 < 60 ms" if n == 1000 else ""
        rows += [
            Row(
                f"1 REST list ({body_vms} VMs)",
                "GET /api/vms p50 vs virsh list --all (process)",
                ms(p50),
                ms(virsh_proc),
                ratio(p50, virsh_proc),
                target,
            ),
            Row(f"1 REST list ({body_vms} VMs)", "GET /api/vms p99", ms(p99)),
            Row(
                f"1 REST list ({body_vms} VMs)",
                "p50 vs one more `list --all` in a virsh session",
                ms(p50),
                ms(virsh_list),
                ratio(p50, virsh_list),
            ),
        ]
    return rows
