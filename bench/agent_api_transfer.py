"""Benchmark: a guest file through the path the API serves, beside the raw channel, in
one run, on a host unix socket (no VM).

    .venv/bin/python bench/agent_api_transfer.py [--mb 64]

- raw channel: AgentClient + agent/transfer.py (upload: raw chunks pipelined; download:
  the windowed raw reads) straight on the agent's socket;
- API: the real app under uvicorn (in a thread of this process, so the bench can mark
  the VM's agent port open: the libvirt test driver keeps no channel state) on a test
  driver whose one running domain has the agent's channel as a unix socket; an HTTP
  PUT and GET over TCP of /api/hosts/local/vms/{vm}/agent/files/content, what the web
  UI and `kvm-manager agent cp` use. The server reaches the agent through that same
  socket (its local fast path), so the difference is the API path itself: HTTP, auth,
  the streaming body and the service layer.
Both sha256-verified. No timing assertions: this prints figures for docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server import free_port
from testdriver import domain, uri

from kvmmanager.agent.client import AgentClient
from kvmmanager.agent.transfer import download, upload
from kvmmanager.agent.transports import UnixTransport
from kvmmanager_agent.build import build_zipapp

CHANNEL = "org.kvmmanager.agent.0"


def node_with_agent(path: Path, sock: str) -> tuple[Path, str]:
    node = ET.Element("node")
    d = domain(0)
    devices = d.find("devices")
    assert devices is not None
    ch = ET.SubElement(devices, "channel", type="unix")
    ET.SubElement(ch, "source", mode="bind", path=sock)
    ET.SubElement(ch, "target", type="virtio", name=CHANNEL, state="connected")
    node.append(d)
    ET.ElementTree(node).write(path, encoding="unicode")
    name = d.findtext("name")
    assert name
    return path, name


async def raw_channel(sock: str, data: bytes, guest: str) -> dict[str, float]:
    client = AgentClient(lambda: UnixTransport.open(sock))
    try:
        t0 = time.perf_counter()
        r = await upload(client, io.BytesIO(data), guest, size=len(data))
        up = time.perf_counter() - t0
        sink = io.BytesIO()
        t0 = time.perf_counter()
        d = await download(client, guest, sink)
        down = time.perf_counter() - t0
    finally:
        await client.close()
    assert sink.getvalue() == data and r["sha256"] == d["sha256"]
    mb = len(data) / 1e6
    return {"upload": round(mb / up, 1), "download": round(mb / down, 1)}


class InProcessServer:
    """The real app under uvicorn on a free port, in a thread; an admin token."""

    def __init__(self, node: Path, data: Path, uri: str | None = None) -> None:
        # `uri`: a real libvirt (bench/agent_api_transfer_guest.py); else the test driver.
        self.node, self.data, self.uri = node, data, uri
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers: dict[str, str] = {}

    def __enter__(self) -> InProcessServer:
        os.environ.update(
            {
                "KVMM_CONFIG": str(self.data / "none.toml"),
                "KVMM_DATA_DIR": str(self.data),
                "KVMM_LIBVIRT__DEFAULT_URI": self.uri or uri(self.node),
                "KVMM_LOG_LEVEL": "warning",
            }
        )
        import uvicorn

        from kvmmanager.core.config import get_settings
        from kvmmanager.services.manager import Manager
        from kvmmanager.web.app import create_app

        settings = get_settings()
        boot = Manager(settings)
        boot.prepare_database()
        _, secret = boot.users.create_token("admin", "kvmm-bench-xfer")
        boot.engine.dispose()
        self.headers = {"Authorization": f"Bearer {secret}"}
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{self.url}/api/hosts", headers=self.headers, timeout=10)
                if r.status_code == 200 and sum(h.get("vm_count", 0) for h in r.json()):
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server did not come up")

    def mark_agent_port_open(self, vm: str) -> None:
        inv = self.app.state.manager.inventory
        info = inv.domain("local", vm)
        inv.put_domain(dataclasses.replace(info, agent_status="connected"))

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def api_path(srv: InProcessServer, vm: str, data: bytes, guest: str) -> dict[str, float]:
    url = f"{srv.url}/api/hosts/local/vms/{vm}/agent/files/content"
    with httpx.Client(headers=srv.headers, timeout=600) as http:
        t0 = time.perf_counter()
        r = http.put(url, params={"path": guest}, content=data)
        up = time.perf_counter() - t0
        if r.status_code != 200:
            raise RuntimeError(f"upload through the API: {r.status_code} {r.text}")
        assert r.json()["sha256"] == hashlib.sha256(data).hexdigest(), r.text
        digest = hashlib.sha256()
        t0 = time.perf_counter()
        with http.stream("GET", url, params={"path": guest}) as resp:
            resp.raise_for_status()
            for part in resp.iter_bytes():
                digest.update(part)
        down = time.perf_counter() - t0
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    mb = len(data) / 1e6
    return {"upload": round(mb / up, 1), "download": round(mb / down, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=64)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kvmm-bench-xfer-"))
    xfer = tmp / "files"
    xfer.mkdir()
    sock = str(tmp / "agent.sock")
    cfg = tmp / "agent.json"
    cfg.write_text(
        json.dumps(
            {"security": {"allowed_read_paths": [str(xfer)], "allowed_write_paths": [str(xfer)]}}
        )
    )
    pyz = build_zipapp(str(tmp / "kvmmanager-agent.pyz"))
    env = dict(os.environ, KVMMANAGER_AGENT_CACHE=str(tmp / "cache"))
    agent = subprocess.Popen(
        [sys.executable, pyz, "--config", str(cfg), "--listen-unix", sock], env=env
    )
    data = os.urandom(args.mb * 1024 * 1024)
    results: dict[str, object] = {"size_mb": round(len(data) / 1e6, 1)}
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(sock):
            if agent.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the agent did not start")
            time.sleep(0.05)
        # The raw channel first: the agent's unix listener serves one connection at a
        # time, and the server keeps its own open once it has one.
        results["raw_channel_MBps"] = asyncio.run(raw_channel(sock, data, str(xfer / "a.bin")))
        node, vm = node_with_agent(tmp / "node.xml", sock)
        (tmp / "data").mkdir()
        with InProcessServer(node, tmp / "data") as srv:
            srv.mark_agent_port_open(vm)
            results["api_MBps"] = api_path(srv, vm, data, str(xfer / "b.bin"))
    finally:
        agent.terminate()
        agent.wait(15)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
