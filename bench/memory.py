"""Benchmark 4: resident memory of the manager process with N VMs in the inventory and
their metric history.

The server (bench/server.py, own process) runs on a test-driver file of N running
domains with the metrics collector at the default 2 s. History rings are preallocated at their full
size (1 h at the interval + 24 h of 5-minute means) on a VM's first sample, so after a
few collections the RSS already includes a full hour of history; a later reading shows
whether it still grows. Compared with the same server on an empty host (the baseline)
and with the arithmetic size of the rings.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
from common import Row
from server import Server
from testdriver import uri, write_node

from kvmmanager.services.metrics.history import DOWNSAMPLE_STEP, DOWNSAMPLED_SECONDS, FULL_SECONDS
from kvmmanager.services.metrics.rates import NFIELDS

DEFAULT_INTERVAL = 2.0


def ring_mb(n: int, interval: float = DEFAULT_INTERVAL) -> float:
    slots = FULL_SECONDS / interval + DOWNSAMPLED_SECONDS / DOWNSAMPLE_STEP
    return n * slots * NFIELDS * 2 / 2**20


_DRIVER_RSS = """
import sys
from pathlib import Path
import libvirt
def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
before = rss()
conn = libvirt.open(sys.argv[1])
print(rss() - before)
"""


def driver_mb(u: str) -> float:
    """RSS the libvirt test driver itself takes for the file (it runs inside the process
    that opens it; on a real host that memory is libvirtd's, not the manager's)."""
    out = subprocess.run(
        [sys.executable, "-c", _DRIVER_RSS, u], check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip())


def wait_cycles(srv: Server, n: int, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r = httpx.get(f"{srv.url}/api/metrics/collectors", headers=srv.headers, timeout=30)
        if r.status_code == 200 and r.json() and r.json()[0]["cycles"] >= n:
            return
        time.sleep(0.2)
    raise RuntimeError("the collector did not run")


def run(
    workdir: Path, sizes: tuple[int, ...] = (1000, 5000), interval: float = DEFAULT_INTERVAL
) -> list[Row]:
    rows: list[Row] = []
    empty = write_node(workdir / "node-0.xml", 0)
    with Server(uri(empty), workdir, 0, interval=interval) as srv:
        wait_cycles(srv, 3)
        baseline = srv.rss_mb()
    rows.append(Row("4 memory", "manager RSS, no VMs (baseline)", f"{baseline:.0f} MB"))
    for n in sizes:
        node = write_node(workdir / f"node-{n}.xml", n)
        with Server(uri(node), workdir, n, interval=interval) as srv:
            wait_cycles(srv, 3)
            first = srv.rss_mb()
            wait_cycles(srv, 6)
            later = srv.rss_mb()
        target = "< 300 MB (5,000 VMs, 1 h history)" if n == 5000 else ""
        rows.append(
            Row(
                "4 memory",
                f"manager RSS, {n} VMs + full history rings ({interval:g} s interval)",
                f"{later:.0f} MB (after 3 cycles: {first:.0f} MB)",
            )
        )
        driver = driver_mb(uri(node))
        rows += [
            Row(
                "4 memory",
                f"of which history rings ({n} VMs, arithmetic)",
                f"{ring_mb(n, interval):.0f} MB",
            ),
            Row(
                "4 memory",
                f"of which libvirt's test driver holding {n} domains in-process",
                f"{driver:.0f} MB",
            ),
            Row(
                "4 memory",
                f"manager's own RSS, {n} VMs (RSS - test driver)",
                f"{later - driver:.0f} MB",
                "",
                "",
                target,
            ),
        ]
    return rows
