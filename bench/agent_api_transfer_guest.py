"""Benchmark: a guest file through the path the API serves, beside the raw channel, in
one run, in a real TCG guest under qemu:///system (issue 13 part 5; the host-socket case
is bench/agent_api_transfer.py).

    .venv/bin/python bench/agent_api_transfer_guest.py [--mb 8]

The guest of tests/e2e/guest with the agent installed from the ISO is booted straight
through libvirt (transient, named kvmm-bench-xfer-<pid>, destroyed at the end). Then:
- raw channel: AgentClient + agent/transfer.py on the guest's agent channel socket;
- API: the real app under uvicorn (bench/agent_api_transfer.InProcessServer) on
  qemu:///system; an HTTP PUT and GET over TCP of
  /api/hosts/local/vms/<guest>/agent/files/content, which reach the same channel.
Both sha256-verified. TCG is slow: keep the size modest. No timing assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_api_transfer import InProcessServer, api_path, raw_channel
from e2e_agent import AGENT_PORT, URI, channel_paths, domain_xml, wait_port
from tests.e2e.guest.build import build_guest

from kvmmanager.iso.builder import build_iso


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=8)
    args = ap.parse_args()
    image = build_guest()
    conn = libvirt.open(URI)
    data = os.urandom(args.mb * 1024 * 1024)
    results: dict[str, object] = {"size_mb": round(len(data) / 1e6, 1), "guest": "TCG"}
    with tempfile.TemporaryDirectory(prefix="kvmm-bench-xfer-", dir="/var/tmp") as tmp:
        os.chmod(tmp, 0o755)  # QEMU reads the ISO and writes the console log there
        iso = build_iso(Path(tmp)).path
        iso.chmod(0o644)
        name = f"kvmm-bench-xfer-{os.getpid()}"
        dom = conn.createXML(domain_xml(name, image, "agent", iso, Path(tmp) / "console.log"), 0)
        try:
            t0 = time.monotonic()
            wait_port(dom, AGENT_PORT)
            results["boot_to_port_s"] = round(time.monotonic() - t0, 1)
            sock = channel_paths(dom)[AGENT_PORT][0]
            # The raw channel first, then its connection is closed: the server opens its own.
            results["raw_channel_MBps"] = asyncio.run(raw_channel(sock, data, "/tmp/a.bin"))
            (Path(tmp) / "data").mkdir()
            with InProcessServer(Path("/nonexistent"), Path(tmp) / "data", uri=URI) as srv:
                srv.mark_agent_port_open(name)
                results["api_MBps"] = api_path(srv, name, data, "/tmp/b.bin")
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            conn.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
