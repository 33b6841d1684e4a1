"""The benchmarks' server: the real app (API + web UI) under uvicorn in its own process,
on a given libvirt URI and a throw-away data dir, so its RSS and CPU are its own.

    python bench/server.py --uri test:///tmp/node.xml --port 8765 --data /tmp/d --token-file F

Writes an admin API token to --token-file before it starts listening.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
WEB_USER = "kvmm-t-bench-web"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--uri", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument(
        "--hosts-file",
        default="",
        help="JSON [[name, uri], ...]: the hosts stored before the start (bench/fleet.py)",
    )
    ap.add_argument(
        "--web-password",
        default="",
        help=f"also create the admin user {WEB_USER} with this password (browser benchmarks)",
    )
    ap.add_argument(
        "--prepare-only",
        action="store_true",
        help="migrate, write the token and the hosts, then exit (`kvm-manager serve` runs next)",
    )
    ap.add_argument(
        "--sndbuf",
        type=int,
        default=0,
        help="pin the send buffer of accepted sockets (emulates clients on slow links)",
    )
    args = ap.parse_args()
    os.environ.update(server_env(args.uri, Path(args.data), args.interval))
    import uvicorn

    from kvmmanager.core.config import get_settings
    from kvmmanager.db.models import Host
    from kvmmanager.services.manager import Manager
    from kvmmanager.web.app import create_app

    settings = get_settings()
    boot = Manager(settings)
    boot.prepare_database()
    _, secret = boot.users.create_token("admin", "kvmm-t-met-bench")
    if args.web_password:
        boot.users.create(WEB_USER, args.web_password, "admin")
    if args.hosts_file:
        # Stored rows, as `kvm-manager host add` leaves them: the start connects them all.
        with boot.db.begin() as s:
            for name, host_uri in json.loads(Path(args.hosts_file).read_text()):
                s.add(Host(name=name, uri=host_uri))
    boot.engine.dispose()
    Path(args.token_file).write_text(secret)
    if args.prepare_only:
        return
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=args.port, log_level="warning"
    )
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if args.sndbuf:
        # Accepted sockets inherit it: no kernel autotuning up to megabytes per client.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, args.sndbuf)
    listener.bind(("127.0.0.1", args.port))
    uvicorn.Server(config).run(sockets=[listener])


def server_env(uri: str, data: Path, interval: float) -> dict[str, str]:
    """The environment of a bench server (also of `kvm-manager serve` in bench/fleet.py)."""
    return {
        "KVMM_CONFIG": str(data / "none.toml"),
        "KVMM_DATA_DIR": str(data),
        "KVMM_LIBVIRT__DEFAULT_URI": uri,
        # Fleet hosts are test-driver files; the default URI alone needs no allowing.
        "KVMM_LIBVIRT__ALLOW_TEST_DRIVER": "true",
        "KVMM_METRICS__INTERVAL_SECONDS": str(interval),
        "KVMM_LOG_LEVEL": "warning",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """Start bench/server.py, wait until it lists `expect_vms` VMs; stop it on exit."""

    def __init__(
        self,
        uri: str,
        workdir: Path,
        expect_vms: int,
        interval: float = 2.0,
        sndbuf: int = 0,
        web_password: str = "",
    ):
        self.uri, self.expect, self.interval, self.sndbuf = uri, expect_vms, interval, sndbuf
        self.web_password = web_password
        self.data = workdir / f"data-{os.getpid()}-{time.monotonic_ns()}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.start_seconds = 0.0

    def __enter__(self) -> Server:
        token_file = self.data / "token"
        self.data.mkdir(parents=True)
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "server.py"),
                "--uri",
                self.uri,
                "--port",
                str(self.port),
                "--data",
                str(self.data),
                "--token-file",
                str(token_file),
                "--interval",
                str(self.interval),
                "--sndbuf",
                str(self.sndbuf),
                "--web-password",
                self.web_password,
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("bench server exited")
            if time.monotonic() > deadline:
                raise RuntimeError("bench server did not come up")
            if token_file.exists() and (tok := token_file.read_text()):
                self.token = tok
                try:
                    if self._count() >= self.expect:
                        break
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        self.start_seconds = time.perf_counter() - t0
        return self

    def _count(self) -> int:
        r = httpx.get(f"{self.url}/api/hosts", headers=self.headers, timeout=30)
        if r.status_code != 200:
            return -1
        return sum(h.get("vm_count", 0) for h in r.json())

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.data, ignore_errors=True)


if __name__ == "__main__":
    main()
