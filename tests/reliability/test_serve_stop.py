"""A graceful stop (SIGTERM) of `kvm-manager serve` with live event streams open is clean
(issue 16 M3: the independent try saw an ASGI error on the way down, "ASGI callable
returned without completing response", once per open stream): the process ends
gracefully, each SSE client's stream is completed by the server, and stderr holds no
traceback and no error line. A real process, real HTTP clients.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

import kvmmanager

SRC = Path(kvmmanager.__file__).parents[1]
WAIT = 90.0  # generous bound of every wait: the machine is shared


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _login(url: str, data_dir: Path) -> httpx.Client:
    """An admin cookie session with the first password changed (as a person does)."""
    password = (data_dir / "initial-admin-password").read_text().strip()
    c = httpx.Client(base_url=url, timeout=30)
    r = c.post("/api/auth/login", json={"username": "admin", "password": password})
    r.raise_for_status()
    r = c.post(
        "/api/auth/password",
        json={"current_password": password, "new_password": password + "-changed"},
        headers={"X-CSRF-Token": r.json()["csrf_token"]},
    )
    r.raise_for_status()
    return c


@pytest.mark.slow
def test_sigterm_with_open_event_streams_stops_cleanly(tmp_path: Path) -> None:
    port = _port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVMM_")}
    env.update(
        KVMM_CONFIG=str(tmp_path / "no-config.toml"),
        KVMM_DATA_DIR=str(data_dir),
        KVMM_LIBVIRT__DEFAULT_URI="test:///default",
        KVMM_LIBVIRT__ALLOW_TEST_DRIVER="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    )
    argv = [sys.executable, "-m", "kvmmanager.cli.main", "serve", "--host", "127.0.0.1"]
    proc = subprocess.Popen(
        [*argv, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    streams: list[threading.Thread] = []
    try:
        deadline = time.monotonic() + WAIT
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        session = _login(url, data_dir)
        opened = threading.Semaphore(0)
        ended: list[str] = []

        def follow() -> None:
            # Each stream reads until the server ends it (or the connection drops).
            try:
                with session.stream("GET", "/api/events", timeout=None) as r:
                    assert r.status_code == 200
                    opened.release()
                    for _ in r.iter_raw():
                        pass
                ended.append("ended")
            except httpx.HTTPError as e:
                ended.append(f"dropped: {e!r}")

        for _ in range(3):
            t = threading.Thread(target=follow, name="kvmm-t-stop-sse", daemon=True)
            t.start()
            streams.append(t)
        for _ in streams:
            assert opened.acquire(timeout=WAIT), "a stream did not open"
        # Let each stream's generator sit waiting for an event, as a browser's would.
        time.sleep(0.5)

        proc.send_signal(signal.SIGTERM)
        code = proc.wait(WAIT)
        _, err = proc.communicate(timeout=WAIT)
        for t in streams:
            t.join(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    # uvicorn stops gracefully, then ends by the signal it caught (systemd counts a death
    # by SIGTERM as a clean stop).
    assert code in (0, -signal.SIGTERM), err
    # Each stream was completed by the server (the chunked body's end), not cut off.
    assert ended == ["ended"] * 3 and all(not t.is_alive() for t in streams), ended
    assert "Traceback" not in err, err
    assert " ERROR " not in err and "ERROR:" not in err, err
