"""Agent figures in a real TCG guest (issue 5 benchmark), side by side:

- `ping` through the manager's AgentClient over virDomainOpenChannel and over the direct
  unix socket, a raw line echo on the same kind of channel (the floor), and Debian's
  qemu-guest-agent `guest-ping` through libvirt's agent command API;
- chunked file transfer host -> guest (AgentClient + transfer.upload: raw chunks in
  flight; and one 512 KiB base64 chunk at a time, as before) vs the raw channel;
- idle RSS of our agent vs qemu-ga, each in its guest;
- boot-to-agent time (createXML to a working ping).

Two guests from tests/e2e/guest (agent installed from the ISO, plus a raw echo on a
third port; and a qemu-ga guest) are booted in parallel straight through libvirt: this
measures the agent and the channel, not the manager's REST layer.

    .venv/bin/python bench/e2e_agent.py [-n 500] [--mb 20] [--write-docs]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from tests.e2e.guest.build import GuestImage, build_guest  # noqa: E402

from kvmmanager.agent.client import AgentClient  # noqa: E402
from kvmmanager.agent.transfer import upload  # noqa: E402
from kvmmanager.agent.transports import LibvirtStreamTransport, UnixTransport  # noqa: E402
from kvmmanager.iso.builder import build_iso  # noqa: E402

URI = "qemu:///system"
AGENT_PORT = "org.kvmmanager.agent.0"
QGA_PORT = "org.qemu.guest_agent.0"
# libvirt itself holds the qga port's socket: the raw echo gets a port of its own.
ECHO_PORT = "org.kvmmanager.bench-echo.0"
DOCS = REPO / "docs" / "performance.md"
BEGIN = "<!-- e2e-agent:begin -->"
END = "<!-- e2e-agent:end -->"


def domain_xml(name: str, image: GuestImage, mode: str, iso: Path | None, log: Path) -> str:
    d = ET.Element("domain", type="qemu")
    ET.SubElement(d, "name").text = name
    ET.SubElement(d, "memory", unit="MiB").text = "384"
    ET.SubElement(d, "vcpu").text = "1"
    os_ = ET.SubElement(d, "os")
    ET.SubElement(os_, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_, "kernel").text = str(image.kernel)
    ET.SubElement(os_, "initrd").text = str(image.initrd)
    cmd = f"console=ttyS0 quiet kvmm.mode={mode} kvmm.hostname={name}"
    ET.SubElement(os_, "cmdline").text = cmd + (
        f" kvmm.echo={ECHO_PORT}" if mode == "agent" else ""
    )
    ET.SubElement(d, "on_poweroff").text = "destroy"
    dev = ET.SubElement(d, "devices")
    cd = ET.SubElement(dev, "disk", type="file", device="cdrom")
    ET.SubElement(cd, "driver", name="qemu", type="raw")
    if iso:
        ET.SubElement(cd, "source", file=str(iso))
    ET.SubElement(cd, "target", dev="hdc", bus="ide")
    ET.SubElement(cd, "readonly")
    ser = ET.SubElement(dev, "serial", type="file")
    ET.SubElement(ser, "source", path=str(log))
    for port in (AGENT_PORT, QGA_PORT, ECHO_PORT):
        ch = ET.SubElement(dev, "channel", type="unix")
        ET.SubElement(ch, "target", type="virtio", name=port)
    return ET.tostring(d, encoding="unicode")


def channel_paths(dom: libvirt.virDomain) -> dict[str, tuple[str, str | None]]:
    out = {}
    for ch in ET.fromstring(dom.XMLDesc(0)).iter("channel"):
        t, s = ch.find("target"), ch.find("source")
        if t is not None and s is not None:
            out[t.get("name", "")] = (s.get("path", ""), t.get("state"))
    return out


def wait_port(dom: libvirt.virDomain, port: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while channel_paths(dom).get(port, ("", None))[1] != "connected":
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dom.name()}: {port} not connected after {timeout} s")
        time.sleep(0.05)


class _Host:
    """What LibvirtStreamTransport needs from a HostConnection: the connection and a
    way to run blocking calls off the event loop."""

    def __init__(self, conn: libvirt.virConnect) -> None:
        self.conn = conn

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)


def stats(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {
        "median_ms": round(statistics.median(ms), 3),
        "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def note(msg: str) -> None:
    print(f"e2e_agent: {msg}", file=sys.stderr, flush=True)


async def time_calls(n: int, fn: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    for _ in range(20):  # warm-up
        await fn()
    ms = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        ms.append((time.perf_counter() - t) * 1000)
    return stats(ms)


async def raw_echo(path: str, n: int) -> dict[str, float]:
    reader, writer = await asyncio.open_unix_connection(path)
    line = b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n'

    async def once() -> None:
        writer.write(line)
        await reader.readline()

    try:
        return await time_calls(n, once)
    finally:
        writer.close()


async def raw_echo_channel(host: _Host, uuid: str, n: int) -> dict[str, float]:
    """The same echo through virDomainOpenChannel (libvirtd relays every byte)."""
    transport = await LibvirtStreamTransport.open(host, uuid, ECHO_PORT)
    line = b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n'

    async def once() -> None:
        await transport.write(line)
        got = b""
        while not got.endswith(b"\n"):
            got += await transport.read()

    try:
        return await time_calls(n, once)
    finally:
        await transport.close()


async def raw_transfer(path: str, size: int) -> float:
    """MB/s of `size` bytes through the echo (host -> guest is the slow direction)."""
    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 22)
    data = os.urandom(size)

    async def send() -> None:
        for i in range(0, size, 65536):
            writer.write(data[i : i + 65536])
            await writer.drain()

    async def recv() -> None:
        got = 0
        while got < size:
            got += len(await reader.read(1 << 20))

    t = time.perf_counter()
    await asyncio.gather(send(), recv())
    secs = time.perf_counter() - t
    writer.close()
    return size / secs / 1e6


async def agent_transfer(client: AgentClient, size: int, pipelined: bool = True) -> float:
    """MB/s of an upload through the transfer helper: raw chunks in flight (the agent
    offers them), or `pipelined=False`, an older agent's 512 KiB base64 chunks one by one."""
    data = os.urandom(size)
    t = time.perf_counter()
    r = await upload(client, io.BytesIO(data), "/tmp/bench.bin", pipelined=pipelined)
    secs = time.perf_counter() - t
    assert r["sha256"] == hashlib.sha256(data).hexdigest(), "transfer corrupted"
    return size / secs / 1e6


def rss_lines(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            out[parts[0]] = int(parts[2])
    return out


def qga_exec(dom: libvirt.virDomain, path: str) -> str:
    cmd = {"execute": "guest-exec", "arguments": {"path": path, "capture-output": True}}
    pid = json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps(cmd), 10, 0))["return"]["pid"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        q = {"execute": "guest-exec-status", "arguments": {"pid": pid}}
        st = json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps(q), 10, 0))["return"]
        if st.get("exited"):
            return base64.b64decode(st.get("out-data", "")).decode()
        time.sleep(0.1)
    raise TimeoutError("guest-exec did not finish")


async def measure(conn: libvirt.virConnect, agent_dom: Any, qga_dom: Any, n: int, mb: int) -> dict:
    paths = channel_paths(agent_dom)
    uuid = agent_dom.UUIDString()
    host = _Host(conn)
    out: dict[str, Any] = {}
    # QEMU's channel socket takes one client at a time: one AgentClient after the other.
    via_channel = AgentClient(lambda: LibvirtStreamTransport.open(host, uuid, AGENT_PORT))
    try:
        # Idle: the agent's RSS before any work (its first request is this listing, run on
        # one worker); the reading at the end comes after 1,500 calls, the transfer and
        # during an exec.
        procs = (await via_channel.call("list_processes"))["processes"]
        out["idle_rss_kb_at_start"] = next(
            (p["rss_kb"] for p in procs if "kvmmanager-agent" in str(p["cmdline"])), None
        )
        note("ping_openchannel")
        out["ping_openchannel"] = await time_calls(n, lambda: via_channel.call("ping"))
    finally:
        await via_channel.close()
    note("raw_echo_openchannel")
    out["raw_echo_openchannel"] = await raw_echo_channel(host, uuid, n)
    via_socket = AgentClient(lambda: UnixTransport.open(paths[AGENT_PORT][0]))
    try:
        note("ping_socket")
        out["ping_socket"] = await time_calls(n, lambda: via_socket.call("ping"))
        note("raw_echo_socket")
        out["raw_echo_socket"] = await raw_echo(paths[ECHO_PORT][0], n)

        def qga_ping() -> Any:
            return libvirt_qemu.qemuAgentCommand(qga_dom, '{"execute":"guest-ping"}', 10, 0)

        note("qga_guest_ping")
        out["qga_guest_ping"] = await time_calls(n, lambda: asyncio.to_thread(qga_ping))
        size = mb * 1024 * 1024
        note("transfer_agent_socket_MBps")
        out["transfer_agent_socket_MBps"] = round(await agent_transfer(via_socket, size), 2)
        note("transfer_agent_one_by_one_MBps")
        out["transfer_agent_one_by_one_MBps"] = round(
            await agent_transfer(via_socket, size, pipelined=False), 2
        )
        note("transfer_raw_socket_MBps")
        out["transfer_raw_socket_MBps"] = round(await raw_transfer(paths[ECHO_PORT][0], size), 2)
        rss = await via_socket.call("exec_command", {"command": "/usr/lib/kvmm-e2e/rss"})
        out["rss_kb"] = rss_lines(rss["stdout"])
        out["rss_kb"].update(rss_lines(qga_exec(qga_dom, "/usr/lib/kvmm-e2e/rss")))
    finally:
        await via_socket.close()
    return out


def boot_pair(conn: libvirt.virConnect, image: GuestImage, iso: Path, logs: Path) -> dict:
    doms, started, boot = {}, {}, {}
    for mode in ("agent", "qga"):
        name = f"kvmm-e2e-bench-{mode}-{os.getpid()}"
        xml = domain_xml(name, image, mode, iso if mode == "agent" else None, logs / f"{name}.log")
        started[mode] = time.monotonic()
        doms[mode] = conn.createXML(xml, 0)
    for mode, port in (("agent", AGENT_PORT), ("qga", QGA_PORT)):
        wait_port(doms[mode], port)
        boot[mode] = round(time.monotonic() - started[mode], 2)
    return {"doms": doms, "boot_s": boot}


def render(res: dict) -> str:
    p = res["results"]
    ratio = p["ping_openchannel"]["median_ms"] / p["raw_echo_openchannel"]["median_ms"]
    ratio_sock = p["ping_socket"]["median_ms"] / p["raw_echo_socket"]["median_ms"]
    share = p["transfer_agent_socket_MBps"] / p["transfer_raw_socket_MBps"] * 100
    rss = p["rss_kb"]
    rows = [
        ("agent ping, AgentClient over virDomainOpenChannel", p["ping_openchannel"]),
        ("agent ping, AgentClient over the unix socket", p["ping_socket"]),
        ("raw line echo over virDomainOpenChannel (floor)", p["raw_echo_openchannel"]),
        ("raw line echo on the channel's unix socket (floor)", p["raw_echo_socket"]),
        ("qemu-ga guest-ping via libvirt agent command", p["qga_guest_ping"]),
    ]
    lines = [
        BEGIN,
        "## Real-VM agent figures (bench/e2e_agent.py)",
        "",
        f"Measured {res['date']} on {res['machine']}; guests: TCG, 1 vCPU, 384 MiB, kernel "
        f"{res['kernel']}; {res['n']} calls each after 20 warm-up calls. Command: "
        "`.venv/bin/python bench/e2e_agent.py --write-docs`.",
        "",
        "| path | median ms | p99 ms | mean ms |",
        "| --- | --- | --- | --- |",
        *[f"| {n} | {s['median_ms']} | {s['p99_ms']} | {s['mean_ms']} |" for n, s in rows],
        "",
        f"- manager client vs raw echo on the same path: openChannel {ratio:.2f}x, unix socket "
        f"{ratio_sock:.2f}x (target <= 1.5x, median <= 1.2 ms)",
        f"- chunked transfer host -> guest, {res['mb']} MB: agent {p['transfer_agent_socket_MBps']}"
        f" MB/s, raw channel {p['transfer_raw_socket_MBps']} MB/s ({share:.0f}%, target >= 80%);"
        f" one 512 KiB base64 chunk per round trip (an older agent, the figure before"
        f" pipelining): {p.get('transfer_agent_one_by_one_MBps', '?')} MB/s",
        f"- idle RSS in the guest: our agent {p.get('idle_rss_kb_at_start', '?')} kB at start "
        f"(first request), {rss.get('agent', '?')} kB after the run (transfer done, during an "
        f"exec); qemu-ga {rss.get('qemu-ga', '?')} kB (target <= 10 MB)",
        f"- boot to agent port connected (createXML, two guests booting at once): "
        f"agent {res['boot_s']['agent']} s (install from the ISO included), "
        f"qemu-ga {res['boot_s']['qga']} s",
        f"- guest image build (cold, cached packages): {res['image_build_s']} s; "
        "a second build is a cache hit",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_docs(section: str) -> None:
    text = DOCS.read_text() if DOCS.exists() else "# Performance\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section.rstrip("\n") + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOCS.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=500)
    ap.add_argument("--mb", type=int, default=20)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    image = build_guest()
    conn = libvirt.open(URI)
    with tempfile.TemporaryDirectory(prefix="kvmm-e2e-bench-", dir="/var/tmp") as tmp:
        os.chmod(tmp, 0o755)  # QEMU reads the ISO and writes the console log there
        iso = build_iso(Path(tmp)).path
        iso.chmod(0o644)
        pair = boot_pair(conn, image, iso, Path(tmp))
        try:
            results = asyncio.run(
                measure(conn, pair["doms"]["agent"], pair["doms"]["qga"], args.n, args.mb)
            )
        finally:
            # A fresh connection: the measuring one may have died with libvirtd.
            with contextlib.closing(libvirt.open(URI)) as again:
                for dom in pair["doms"].values():
                    with contextlib.suppress(libvirt.libvirtError):
                        again.lookupByUUIDString(dom.UUIDString()).destroy()
    res = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {os.uname().release}",
        "kernel": image.kernel_version,
        "n": args.n,
        "mb": args.mb,
        "boot_s": pair["boot_s"],
        "image_build_s": image.build_seconds,
        "results": results,
    }
    print(json.dumps(res, indent=2))
    section = render(res)
    print(section)
    if args.write_docs:
        write_docs(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
