"""A real server process for the anonymous-exhaustion tests: `kvm-manager serve` as the
packaged unit runs it (uvicorn with the product's own configuration), on a port and data
dir of its own, on libvirt's test driver. The tests measure the process itself through
/proc (resident memory, descriptors) and talk to it over raw sockets where a well-behaved
HTTP client would hide what an attacker does."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_password(self) -> str:
        return (self.data_dir / "initial-admin-password").read_text().strip()

    def _status(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {key} in /proc/{self.proc.pid}/status")

    def rss(self) -> int:
        """Resident memory of the server process now, in bytes."""
        return self._status("VmRSS")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def client(self, source: str = "127.0.0.1", **kw: object) -> httpx.Client:
        """An HTTP client whose connections come from `source` (any 127.x.y.z address
        reaches the server over loopback): a distinct client address per attacker."""
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(base_url=self.url, transport=transport, timeout=30, **kw)  # type: ignore[arg-type]

    def admin_token(self) -> str:
        with self.client() as c:
            r = c.post(
                "/api/auth/login", json={"username": "admin", "password": self.admin_password}
            )
            r.raise_for_status()
            csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
            if r.json().get("password_change_required"):
                # The generated first password is changed before anything else; the file
                # keeps the current one for `admin_password`.
                old, new = self.admin_password, self.admin_password + "-changed"
                r = c.post(
                    "/api/auth/password",
                    json={"current_password": old, "new_password": new},
                    headers=csrf,
                )
                r.raise_for_status()
                (self.data_dir / "initial-admin-password").write_text(new + "\n")
                csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
            r = c.post("/api/tokens", json={"name": "kvmm-t-secanon"}, headers=csrf)
            r.raise_for_status()
            return r.json()["token"]


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Served]]:
    """`serve(env={...}, nofile=1024)` -> a started `kvm-manager serve` child process with
    a data dir of its own. `env` adds KVMM_* settings; `nofile` sets its descriptor limit
    (soft and hard), as a unit's LimitNOFILE would. A server starts in seconds of CPU on a
    loaded machine, so the tests of one module share the one started with the same
    arguments."""
    made: dict[tuple[tuple[tuple[str, str], ...], int | None], Served] = {}

    def start(env: dict[str, str] | None = None, nofile: int | None = None) -> Served:
        key = (tuple(sorted((env or {}).items())), nofile)
        if key in made and made[key].proc.poll() is None:
            return made[key]
        base = tmp_path_factory.mktemp("kvmm-t-secanon")
        port = free_port()
        log = base / "serve.log"
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("KVMM_") and k != "XDG_CONFIG_HOME"
        }
        full_env.update(
            KVMM_CONFIG=str(base / "no-config.toml"),
            KVMM_DATA_DIR=str(base / "data"),
            KVMM_LIBVIRT__DEFAULT_URI="test:///default",
            KVMM_LOG_LEVEL="warning",
            XDG_CONFIG_HOME=str(base / "xdg-config"),
        )
        full_env.update(env or {})

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        argv = [sys.executable, "-m", "kvmmanager.cli.main", "serve"]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, env=full_env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=limit
            )
        srv = Served(proc, port, base / "data", log)
        made[key] = srv
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{srv.url}/api/health", timeout=2).status_code == 200:
                    return srv
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {log.read_text()[-3000:]}")
            time.sleep(0.1)

    yield start
    for srv in made.values():
        if srv.proc.poll() is None:
            srv.proc.send_signal(signal.SIGTERM)
            try:
                srv.proc.wait(60)
            except subprocess.TimeoutExpired:
                srv.proc.kill()
                srv.proc.wait(30)


def read_response(sock: socket.socket, seconds: float = 30.0) -> bytes:
    """What the server sends until it closes the connection or `seconds` pass."""
    sock.settimeout(seconds)
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and data.split(b"\r\n\r\n", 1)[1].endswith(b"}"):
                break
    return data


def closed_by_server(sock: socket.socket, seconds: float = 30.0) -> bool:
    """Whether the server closes `sock` within `seconds` (whatever it sends first)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True
