"""Benchmarks 4, 5 and 7 for the one runner: the guest agent beside qemu-guest-agent, its
chunked transfer beside the raw channel, the agent ISO build beside xorriso, and (opt-in)
the same figures inside real TCG guests.

- `agent`: bench/agent_ping.py run as its own process (its CLI is the interface, so it
  stays usable alone): ping round trip and idle RSS of our agent and of qemu-ga, both on a
  host unix socket, driven by the same client in the same run.
- `transfer`: the same run's chunked upload/download through AgentClient (base64 chunks,
  sha256-verified) beside the raw throughput of the same kind of socket: a bare echo
  (`os.read`/`os.write`) under the same interpreter the agent runs on.
- `iso`: `build_iso()` cold (zipapp, the 3 nfpm packages, mastering) and from the package
  cache, target < 2 s; and the mastering step alone beside `xorriso -as mkisofs` writing
  the same files (Rock Ridge + Joliet), when xorriso is installed.
- `vm`: bench/e2e_agent.py as its own process (needs libvirtd and boots two TCG guests,
  ~1-2 minutes): ping over virDomainOpenChannel vs the raw echo on the same path and vs
  qemu-ga's guest-ping through libvirt, transfer vs the raw channel, RSS in the guest.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import Row, median, ratio

from kvmmanager.iso import agent_version
from kvmmanager.iso.builder import build_iso, collect_files, master_iso
from kvmmanager.iso.packages import packaging_dirs

HERE = Path(__file__).resolve().parent
EPOCH = 1_700_000_000
# The interpreter a guest would run the agent with (agent_ping.py uses the same).
GUEST_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
ECHO = """
import os, socket, sys
srv = socket.socket(socket.AF_UNIX)
srv.bind(sys.argv[1])
srv.listen(1)
while True:
    conn, _ = srv.accept()
    fd = conn.fileno()
    while True:
        data = os.read(fd, 1 << 20)
        if not data:
            break
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    conn.close()
"""

_agent_runs: dict[tuple[int, int], dict[str, Any]] = {}


def _json_out(stdout: str) -> dict[str, Any]:
    """The JSON document a bench script prints (e2e_agent.py prints Markdown after it)."""
    start = stdout.index("{")
    return json.JSONDecoder().raw_decode(stdout[start:])[0]


def _script(args: list[str], timeout: float) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return _json_out(done.stdout)


def agent_ping(pings: int, transfer_mb: int) -> dict[str, Any]:
    """One agent_ping.py run per runner process, shared by `agent` and `transfer`."""
    key = (pings, transfer_mb)
    if key not in _agent_runs:
        _agent_runs[key] = _script(
            [str(HERE / "agent_ping.py"), "--pings", str(pings), "--transfer-mb", str(transfer_mb)],
            timeout=600,
        )
    return _agent_runs[key]


def us(v: float) -> str:
    return f"{v:.3g} µs"


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f} MB"


def run_agent(workdir: Path, pings: int = 2000, transfer_mb: int = 32) -> list[Row]:
    r = agent_ping(pings, transfer_mb)
    ours, qga, client = r["ping"]
    label = "4 agent (host unix socket)"
    rss = r["idle_rss_kb"]
    return [
        Row(
            label,
            "ping round trip median, same line client: ours vs qemu-ga guest-ping",
            us(ours["median_us"]),
            us(qga["median_us"]),
            ratio(ours["median_us"], qga["median_us"]),
            "<= 1.0x qemu-ga",
        ),
        Row(
            label,
            "ping round trip p99",
            us(ours["p99_us"]),
            us(qga["p99_us"]),
            ratio(ours["p99_us"], qga["p99_us"]),
        ),
        Row(
            label,
            "ping through the full AgentClient, median / p99",
            f"{us(client['median_us'])} / {us(client['p99_us'])}",
        ),
        Row(
            label,
            f"idle RSS vs qemu-ga (bare {os.path.basename(r['agent_interpreter'])}: "
            f"{mb(r['bare_interpreter_rss_kb'])})",
            mb(rss["kvmmanager-agent"]),
            mb(rss["qemu-ga"]),
            ratio(rss["kvmmanager-agent"], rss["qemu-ga"]),
            "<= 10 MB",
        ),
    ]


async def _raw_throughput(path: str, size: int) -> float:
    """MB/s of `size` bytes sent through the echo and read back (both directions busy,
    as the agent's upload reads one reply per chunk)."""
    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 22)
    data = os.urandom(size)

    async def send() -> None:
        for i in range(0, size, 1 << 16):
            writer.write(data[i : i + (1 << 16)])
            await writer.drain()

    async def recv() -> None:
        got = 0
        while got < size:
            chunk = await reader.read(1 << 20)
            if not chunk:
                raise RuntimeError("echo closed early")
            got += len(chunk)

    t0 = time.perf_counter()
    await asyncio.gather(send(), recv())
    secs = time.perf_counter() - t0
    writer.close()
    await writer.wait_closed()
    return size / secs / (1 << 20)


def raw_channel(workdir: Path, size_mb: int, rounds: int = 3) -> float:
    sock = workdir / "echo.sock"
    sock.unlink(missing_ok=True)
    proc = subprocess.Popen([GUEST_PYTHON, "-c", ECHO, str(sock)])
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the raw echo did not start")
            time.sleep(0.02)
        size = size_mb << 20
        return median([asyncio.run(_raw_throughput(str(sock), size)) for _ in range(rounds)])
    finally:
        proc.terminate()
        proc.wait(10)


def run_transfer(workdir: Path, pings: int = 2000, transfer_mb: int = 32) -> list[Row]:
    r = agent_ping(pings, transfer_mb)
    t = r["transfer_MBps"]
    raw = raw_channel(workdir, transfer_mb)
    label = f"5 transfer ({transfer_mb} MB, host unix socket)"
    new, old = t["pipelined"], t["one_by_one"]
    return [
        Row(
            label,
            "chunked upload (AgentClient, 1 MiB raw chunks, 4 in flight) vs raw echo, MB/s",
            f"{new['upload']:g} MB/s",
            f"{raw:.1f} MB/s",
            ratio(new["upload"], raw),
            ">= 0.8x raw",
        ),
        Row(
            label,
            "chunked download (512 KiB base64 chunks, 4 in flight) vs raw echo, MB/s",
            f"{new['download']:g} MB/s",
            f"{raw:.1f} MB/s",
            ratio(new["download"], raw),
        ),
        Row(
            label,
            "upload / download one chunk at a time (an older agent: 512 KiB base64), MB/s",
            f"{old['upload']:g} / {old['download']:g} MB/s",
            f"{raw:.1f} MB/s",
            ratio(old["upload"], raw),
        ),
    ]


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _xorriso(tree: Path, out: Path) -> None:
    subprocess.run(
        [
            "xorriso",
            "-as",
            "mkisofs",
            "-quiet",
            "-R",
            "-J",
            "-V",
            "KVMM",
            "-o",
            str(out),
            str(tree),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def run_iso(workdir: Path, repeats: int = 3) -> list[Row]:
    cold = []
    warm = []
    for k in range(repeats):
        cache = workdir / f"iso-cache-{k}"
        cold.append(
            _timed(lambda c=cache: build_iso(workdir, source_date_epoch=EPOCH, cache_dir=c))
        )
        warm.append(
            _timed(lambda c=cache: build_iso(workdir, source_date_epoch=EPOCH, cache_dir=c))
        )
    label = "7 agent ISO build"
    rows = [
        Row(
            label,
            "build_iso(), cold package cache (zipapp, 3 nfpm runs, mastering)",
            f"{median(cold):.3f} s",
            "",
            "",
            "< 2 s",
        ),
        Row(label, "build_iso(), packages from the cache", f"{median(warm):.3f} s"),
    ]
    # Mastering alone, ours (pycdlib, in-process) vs xorriso (a process) on the same files.
    work = workdir / "iso-work"
    work.mkdir(exist_ok=True)
    files = collect_files(packaging_dirs(), work, agent_version(), EPOCH, workdir / "iso-cache-0")
    tree = workdir / "iso-tree"
    for rel, (data, mode) in files.items():
        path = tree / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
    size = sum(len(d) for d, _ in files.values())
    ours = median(
        [_timed(lambda: master_iso(files, workdir / "m.iso", EPOCH)) for _ in range(repeats)]
    )
    measure = f"mastering {len(files)} files ({size >> 10} KiB): pycdlib vs xorriso -as mkisofs"
    if shutil.which("xorriso"):
        peer = median([_timed(lambda: _xorriso(tree, workdir / "x.iso")) for _ in range(repeats)])
        rows.append(Row(label, measure, f"{ours:.3f} s", f"{peer:.3f} s", ratio(ours, peer)))
    else:
        rows.append(Row(label, measure, f"{ours:.3f} s", "xorriso not installed"))
    return rows


def run_vm(workdir: Path, n: int = 500, transfer_mb: int = 20) -> list[Row]:
    res = _script(
        [str(HERE / "e2e_agent.py"), "-n", str(n), "--mb", str(transfer_mb)], timeout=1800
    )
    p = res["results"]
    label = "4-5 agent in a TCG guest"
    oc, floor, qga = p["ping_openchannel"], p["raw_echo_openchannel"], p["qga_guest_ping"]
    rss = p["rss_kb"]
    agent_mbps, raw_mbps = p["transfer_agent_socket_MBps"], p["transfer_raw_socket_MBps"]
    return [
        Row(
            label,
            "ping median, AgentClient over virDomainOpenChannel vs raw echo on the same path",
            f"{oc['median_ms']} ms",
            f"{floor['median_ms']} ms",
            ratio(oc["median_ms"], floor["median_ms"]),
            "<= 1.5x, <= 1.2 ms",
        ),
        Row(
            label,
            "ping median vs qemu-ga guest-ping through libvirt's agent command",
            f"{oc['median_ms']} ms",
            f"{qga['median_ms']} ms",
            ratio(oc["median_ms"], qga["median_ms"]),
        ),
        Row(
            label,
            f"transfer host -> guest ({transfer_mb} MB) vs raw channel, MB/s",
            f"{agent_mbps} MB/s",
            f"{raw_mbps} MB/s",
            ratio(agent_mbps, raw_mbps),
            ">= 0.8x raw",
        ),
        Row(
            label,
            "idle RSS in the guest vs qemu-ga",
            mb(rss.get("agent", float("nan"))),
            mb(rss.get("qemu-ga", float("nan"))),
            ratio(rss.get("agent", float("nan")), rss.get("qemu-ga", float("nan"))),
            "<= 10 MB",
        ),
        Row(
            label,
            "boot to agent port connected vs qemu-ga (ISO install included)",
            f"{res['boot_s']['agent']} s",
            f"{res['boot_s']['qga']} s",
            ratio(res["boot_s"]["agent"], res["boot_s"]["qga"]),
        ),
    ]
