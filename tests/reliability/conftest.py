"""Shared tools of the reliability tests: an RSS sampler (peak memory of this process),
the fake-guest fixture (the guest and its hostile behaviours live in hostile.py, which
bench/hostile_api.py imports too), latency summaries, and a figures sink.

Figures (timings) are never asserted; they are printed and, when KVMM_RELIABILITY_OUT
names a file, appended to it as JSON lines so docs/reliability.md can quote a run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.migration.second_host import SecondHost
from tests.reliability.hostile import Behaviour, FakeGuest


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class RssSampler:
    """Peak RSS of this process while in use (sampled every 5 ms in a thread)."""

    def __init__(self) -> None:
        self.baseline = rss_bytes()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kvmm-t-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / 1e6


def summary_ms(samples: list[float]) -> dict[str, float]:
    """p50/p99/max of latencies given in seconds, in milliseconds."""
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(p99 * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A dict the test fills with its measured figures; printed and optionally saved."""
    data: dict[str, Any] = {}
    yield data
    if not data:
        return
    line = json.dumps({"test": request.node.nodeid, **data}, sort_keys=True)
    print(f"\nKVMM-FIGURES {line}")
    out = os.environ.get("KVMM_RELIABILITY_OUT")
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


@pytest.fixture
async def fake_guest() -> AsyncIterator[Callable[..., Awaitable[FakeGuest]]]:
    made: list[FakeGuest] = []

    async def make(behaviour: Behaviour, hostile_connections: int = 1) -> FakeGuest:
        path = f"/tmp/kvmm-t-sec-guest-{os.getpid()}-{len(made)}-{time.monotonic_ns()}.sock"
        guest = FakeGuest(path, behaviour, hostile_connections)
        await guest.start()
        made.append(guest)
        return guest

    yield make
    for guest in made:
        await guest.stop()


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    """`wait_for(fn, seconds)`: poll `fn()` until it returns something truthy (returned);
    fail after a generous deadline. For conditions no event announces (another process)."""

    def poll(fn: Callable[[], Any], seconds: float = 60.0, every: float = 0.05) -> Any:
        deadline = time.monotonic() + seconds
        while True:
            value = fn()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {seconds} s: {fn}")
            time.sleep(every)

    return poll


class ServerProcess:
    """The real server (uvicorn + create_app) as a child process on a data dir, so a
    test can SIGKILL it and start it again on the same data."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env = env
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token: str | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "uvicorn", "--factory", "kvmmanager.web.app:create_app"]
        argv += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        self.proc = subprocess.Popen(
            argv,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"server did not start: {err[-2000:]}")
            time.sleep(0.1)

    def api(self) -> httpx.Client:
        """An admin client (bearer token made once through a login session)."""
        if self.token is None:
            data_dir = Path(self.env["KVMM_DATA_DIR"])
            password = (data_dir / "initial-admin-password").read_text().strip()
            with httpx.Client(base_url=self.url, timeout=30) as s:
                r = s.post("/api/auth/login", json={"username": "admin", "password": password})
                r.raise_for_status()
                csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
                if r.json().get("password_change_required"):
                    # The generated first password is changed before anything else; the
                    # file keeps the current one for whoever reads it next.
                    new = password + "-changed"
                    r = s.post(
                        "/api/auth/password",
                        json={"current_password": password, "new_password": new},
                        headers=csrf,
                    )
                    r.raise_for_status()
                    (data_dir / "initial-admin-password").write_text(new + "\n")
                    csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
                r = s.post("/api/tokens", json={"name": "kvmm-t-sec-chaos"}, headers=csrf)
                r.raise_for_status()
                self.token = r.json()["token"]
        return httpx.Client(
            base_url=self.url, timeout=60, headers={"Authorization": f"Bearer {self.token}"}
        )

    def spawn_upload(
        self, path: str, body: Iterator[bytes], size: int, params: dict[str, str]
    ) -> threading.Thread:
        """PUT a streamed body in a thread (it dies with the server: errors expected)."""
        api = self.api()

        def run() -> None:
            with contextlib.suppress(httpx.HTTPError):
                api.put(
                    path,
                    content=body,
                    params={**params, "size": str(size)},
                    headers={"Content-Type": "application/octet-stream"},
                )

        t = threading.Thread(target=run, name="kvmm-t-sec-upload", daemon=True)
        t.start()
        return t

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def server_process(settings: Any) -> Iterator[Callable[..., ServerProcess]]:
    """`server_process(uri=...)` -> a started ServerProcess on this test's data dir."""
    made: list[ServerProcess] = []

    def make(uri: str = "test:///default") -> ServerProcess:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "KVMM_LIBVIRT__DEFAULT_URI": uri}
        srv = ServerProcess(env, port)
        made.append(srv)
        srv.start()
        return srv

    yield make
    for srv in made:
        srv.stop()


@pytest.fixture(scope="module")
def private_host() -> Iterator[SecondHost]:
    """A private libvirtd (tests/migration/second_host.py) for the module: the daemon the
    freeze tests SIGSTOP, never the shared qemu:///system other test runs use."""
    if os.geteuid() != 0:
        pytest.skip("a private libvirtd in its own namespaces needs root")
    host = SecondHost()
    host.start()
    try:
        yield host
    finally:
        host.stop()


@contextlib.contextmanager
def frozen(host: SecondHost) -> Iterator[None]:
    """SIGSTOP the private libvirtd; SIGCONT it whatever happens."""
    pid = int((host.root / "libvirtd.pid").read_text().strip())
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
