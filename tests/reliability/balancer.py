"""The documented HAProxy example (contrib/haproxy/kvm-manager.cfg) run in front of manager
instances, for tests/reliability/test_fleet_balancer.py and bench/balancer.py.

The example's defaults, frontend and backend are used as written except for the
addresses: the frontend binds 127.0.0.1 on a free port, the `server` lines point at the
instances given. Its global section (syslog, chroot, a daemon) is replaced by one of the
run's own: haproxy in the foreground (-db), its admin socket in the run's directory, so
nothing meets a system haproxy or another run's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from tests.reliability.conftest import ServerProcess

import kvmmanager

# The instances import the code under test, wherever the run found it.
SRC = Path(kvmmanager.__file__).parents[1]
EXAMPLE = Path(__file__).parents[2] / "contrib" / "haproxy" / "kvm-manager.cfg"
WAIT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_instances(
    workdir: Path,
    url: str,
    names: list[str],
    uri: str = "test:///default",
    extra_env: dict[str, str] | None = None,
) -> dict[str, ServerProcess]:
    """Manager servers on database `url`, each with its own data dir and port, started one
    after the other (the first makes the admin: its data dir has the password file)."""
    made: dict[str, ServerProcess] = {}
    try:
        for name in names:
            env = {k: v for k, v in os.environ.items() if not k.startswith("KVMM_")}
            env.update(
                KVMM_CONFIG=str(workdir / "no-config.toml"),
                KVMM_DATA_DIR=str(workdir / f"data-{name}"),
                KVMM_DATABASE__URL=url,
                KVMM_LIBVIRT__DEFAULT_URI=uri,
                KVMM_LIBVIRT__ALLOW_TEST_DRIVER="1",
                # The balancer's X-Forwarded-For is believed (docs/operations.md).
                KVMM_SERVER__TRUSTED_PROXIES='["127.0.0.1"]',
                PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
            )
            port = free_port()
            # As `kvm-manager serve --port` sets it: the address the instance lists.
            env["KVMM_SERVER__PORT"] = str(port)
            env.update(extra_env or {})
            srv = ServerProcess(env, port)
            made[name] = srv
            srv.start()
    except BaseException:
        for srv in made.values():
            srv.stop()
        raise
    return made


def render(example: str, port: int, servers: dict[str, int], stats: Path) -> str:
    """The example with the run's global section, frontend port and server addresses."""
    body = example[example.index("\ndefaults") :]
    body = re.sub(r"(?m)^(\s*)bind \S+$", rf"\1bind 127.0.0.1:{port}", body, count=1)
    lines = [line for line in body.splitlines() if not line.strip().startswith("server ")]
    lines += [f"    server {name} 127.0.0.1:{p} check" for name, p in servers.items()]
    own_global = f"global\n    maxconn 2000\n    stats socket {stats} mode 600 level admin\n"
    return own_global + "\n".join(lines) + "\n"


class HAProxy:
    """haproxy -db on a config rendered from the example; `states()` reads its admin
    socket."""

    def __init__(self, workdir: Path, servers: dict[str, int]) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            raise RuntimeError("haproxy not found: run scripts/install-system-packages --test")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Its own short directory: a unix socket's path is at most 107 bytes, and a
        # pytest tmp_path under a run's temporary directory can be longer.
        self._sockdir = Path(tempfile.mkdtemp(prefix="kvmm-t-lb-"))
        self.stats = self._sockdir / "haproxy.sock"
        self.config = workdir / "haproxy.cfg"
        self.config.write_text(render(EXAMPLE.read_text(), self.port, servers, self.stats))
        self.log = (workdir / "haproxy.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, "-db", "-f", str(self.config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        self.servers = set(servers)

    def states(self) -> dict[str, str]:
        """Server name -> its check state (UP, DOWN, ...) as HAProxy sees it now."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.stats))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        rows = data.decode().splitlines()
        header = rows[0].lstrip("# ").split(",")
        name, status = header.index("svname"), header.index("status")
        return {
            f[name]: f[status]
            for f in (r.split(",") for r in rows[1:] if r)
            if f[name] in self.servers
        }

    def wait_all_up(self) -> None:
        deadline = time.monotonic() + WAIT
        while True:
            with contextlib.suppress(OSError, ValueError, IndexError):
                if set(self.states().values()) == {"UP"}:
                    with contextlib.suppress(httpx.HTTPError):
                        if httpx.get(f"{self.url}/api/health", timeout=5).status_code == 200:
                            return
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy ended: {Path(self.log.name).read_text()[-2000:]}")
            assert time.monotonic() < deadline, "haproxy never saw every instance up"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.log.close()
        shutil.rmtree(self._sockdir, ignore_errors=True)
