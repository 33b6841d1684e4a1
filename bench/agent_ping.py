"""Benchmark: our agent vs qemu-guest-agent on a host unix socket, same client code.

    .venv/bin/python bench/agent_ping.py [--pings 2000] [--transfer-mb 32]

- ping round trip (median, p99) of `kvmmanager-agent.pyz --listen-unix` (`ping`) and of
  `qemu-ga -m unix-listen` (`guest-ping`), both driven by the same minimal asyncio line
  client in this run; plus our full AgentClient (validation, ids, futures) for reference;
- idle RSS of each process (VmRSS, after start and after the pings), and of our agent
  serving a "port" (a FIFO standing in for the virtio-serial port: what a guest runs,
  no socket module); the agent keeps its bytecode cache in this run's temporary folder;
- chunked transfer throughput over the unix socket (AgentClient + transfer helpers,
  upload and download, sha256-verified), one chunk at a time (an older agent's mode)
  and pipelined (raw chunks, several in flight), in the same run.
No timing assertions anywhere: this prints figures for docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from kvmmanager.agent.client import AgentClient
from kvmmanager.agent.transfer import download, upload
from kvmmanager.agent.transports import UnixTransport
from kvmmanager_agent.build import build_zipapp


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def wait_socket(path: str, proc: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):  # noqa: ASYNC240 (a benchmark harness)
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args[0]} did not start")
        await asyncio.sleep(0.02)


async def line_pings(path: str, request: bytes, n: int, warmup: int = 100) -> list[float]:
    """The shared client: write one line, read one line, n times (microseconds)."""
    reader, writer = await asyncio.open_unix_connection(path)
    out = []
    try:
        for i in range(n + warmup):
            t0 = time.perf_counter()
            writer.write(request)
            await writer.drain()
            line = await reader.readline()
            dt = time.perf_counter() - t0
            assert b'"error"' not in line and line.strip(), line
            if i >= warmup:
                out.append(dt * 1e6)
    finally:
        writer.close()
    return out


def summary(name: str, us: list[float]) -> dict:
    us = sorted(us)
    return {
        "name": name,
        "n": len(us),
        "median_us": round(statistics.median(us), 1),
        "p99_us": round(us[int(len(us) * 0.99) - 1], 1),
        "mean_us": round(statistics.fmean(us), 1),
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pings", type=int, default=2000)
    ap.add_argument("--transfer-mb", type=int, default=32)
    args = ap.parse_args()
    qga = shutil.which("qemu-ga") or "/usr/sbin/qemu-ga"
    tmp = Path(tempfile.mkdtemp(prefix="kvmm-bench-agent-"))
    pyz = build_zipapp(str(tmp / "kvmmanager-agent.pyz"))
    cfg = tmp / "config.json"
    xfer = tmp / "xfer"
    xfer.mkdir()
    # The default rate limit (200 requests/s) would throttle a ping loop: lift it here.
    cfg.write_text(json.dumps({"requests_per_second": 1_000_000,
                               "security": {"allowed_read_paths": [str(xfer)],
                                            "allowed_write_paths": [str(xfer)]}}))  # fmt: skip
    ours_sock, qga_sock = str(tmp / "ours.sock"), str(tmp / "qga.sock")
    (tmp / "qga-state").mkdir()
    # The distribution's python3 is what a guest runs (pyenv builds are larger).
    interp = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"  # noqa: ASYNC240
    # The agent's bytecode cache (made on its first start, as in a guest) lives in tmp.
    agent_env = dict(os.environ, KVMMANAGER_AGENT_CACHE=str(tmp / "cache"))
    ours = subprocess.Popen(  # noqa: ASYNC220
        [interp, pyz, "--config", str(cfg), "--listen-unix", ours_sock],
        stderr=subprocess.DEVNULL, env=agent_env,
    )  # fmt: skip
    qemu = subprocess.Popen(  # noqa: ASYNC220
        [qga, "-m", "unix-listen", "-p", qga_sock, "-t", str(tmp / "qga-state"),
         "-f", str(tmp / "qga.pid")],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    results: dict = {"agent_interpreter": interp, "cpus": os.cpu_count()}
    base = subprocess.run(  # noqa: ASYNC221
        [interp, "-c", "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    results["bare_interpreter_rss_kb"] = int(base.stdout)
    try:
        await wait_socket(ours_sock, ours)
        await wait_socket(qga_sock, qemu)
        await asyncio.sleep(1.0)  # let both settle before the idle RSS reading
        results["idle_rss_kb"] = {"kvmmanager-agent": rss_kb(ours.pid), "qemu-ga": rss_kb(qemu.pid)}
        fifo = tmp / "port"
        os.mkfifo(fifo)
        on_port = subprocess.Popen(  # noqa: ASYNC220
            [interp, pyz, "--config", str(cfg), "--device", str(fifo)],
            stderr=subprocess.DEVNULL, env=agent_env,
        )  # fmt: skip
        await asyncio.sleep(1.5)
        results["idle_rss_kb"]["kvmmanager-agent on a port"] = rss_kb(on_port.pid)
        on_port.terminate()
        on_port.wait(10)
        ping_ours = b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n'
        ping_qga = b'{"execute":"guest-ping"}\n'
        # Interleave rounds so both see the same machine load.
        a, b = [], []
        rounds = 4
        for _ in range(rounds):
            a += await line_pings(ours_sock, ping_ours, args.pings // rounds)
            b += await line_pings(qga_sock, ping_qga, args.pings // rounds)
        s_ours, s_qga = summary("kvmmanager-agent ping", a), summary("qemu-ga guest-ping", b)
        results["ping"] = [s_ours, s_qga]
        results["ratio_median"] = round(s_ours["median_us"] / s_qga["median_us"], 2)
        client = AgentClient(lambda: UnixTransport.open(ours_sock))
        full = []
        for _ in range(args.pings):
            t0 = time.perf_counter()
            await client.call("ping")
            full.append((time.perf_counter() - t0) * 1e6)
        results["ping"].append(summary("kvmmanager-agent via AgentClient", full))
        results["rss_after_pings_kb"] = {
            "kvmmanager-agent": rss_kb(ours.pid), "qemu-ga": rss_kb(qemu.pid),
        }  # fmt: skip
        data = os.urandom(args.transfer_mb * 1024 * 1024)
        results["transfer_MBps"] = {"size_mb": args.transfer_mb}
        # "one_by_one" is what an older agent gets (512 KiB base64 chunks, one round trip
        # each: the figure before pipelining); "pipelined" is raw chunks, several in flight.
        for mode, pipelined, window in (("one_by_one", False, 1), ("pipelined", True, 4)):
            t0 = time.perf_counter()
            await upload(
                client, io.BytesIO(data), str(xfer / "big.bin"), size=len(data),
                pipelined=pipelined,
            )  # fmt: skip
            up = time.perf_counter() - t0
            sink = io.BytesIO()
            t0 = time.perf_counter()
            await download(client, str(xfer / "big.bin"), sink, window=window)
            down = time.perf_counter() - t0
            assert sink.getvalue() == data
            results["transfer_MBps"][mode] = {
                "upload": round(args.transfer_mb / up, 1),
                "download": round(args.transfer_mb / down, 1),
            }
        await client.close()
    finally:
        for p in (ours, qemu):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
