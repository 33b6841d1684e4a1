"""Active/active (issue 16 item 3): two real server processes (uvicorn + create_app) on
one PostgreSQL database. A browser session made on instance A works on instance B (the
cookie and its CSRF token are rows, not process memory); a job started through A is
readable through B, and its progress and end reach B's SSE stream (LISTEN/NOTIFY,
services/fleet/events.py)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.postgres_cluster import shared_cluster
from tests.reliability.conftest import ServerProcess

import kvmmanager

# The children import the code under test, wherever the test run found it.
SRC = Path(kvmmanager.__file__).parents[1]
WAIT = 60.0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def two_instances(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    url = shared_cluster().new_database()
    made: list[ServerProcess] = []
    try:
        for i in range(2):
            env = {
                **os.environ,
                "KVMM_CONFIG": str(tmp_path / "no-config.toml"),
                "KVMM_DATA_DIR": str(tmp_path / f"data-{i}"),
                "KVMM_DATABASE__URL": url,
                "KVMM_LIBVIRT__DEFAULT_URI": "test:///default",
                "KVMM_LIBVIRT__ALLOW_TEST_DRIVER": "1",
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(SRC), os.environ.get("PYTHONPATH")])
                ),
            }
            srv = ServerProcess(env, _port())
            made.append(srv)
            srv.start()  # one after the other: the first makes the admin
        yield made[0], made[1]
    finally:
        for srv in made:
            srv.stop()


class SseReader:
    """Reads `GET /api/events?kind=job.` of one instance in a thread."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.events: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self.changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="kvmm-t-fleet-sse", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with (
            contextlib.suppress(httpx.HTTPError),
            self.client.stream("GET", "/api/events", params={"kind": "job."}) as r,
        ):
            r.raise_for_status()
            self.connected.set()
            kind = None
            for line in r.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind is not None:
                    with self.changed:
                        self.events.append({"kind": kind, **json.loads(line[5:])})
                        self.changed.notify_all()

    def wait_for(self, pred: Any) -> list[dict[str, Any]]:
        with self.changed:
            assert self.changed.wait_for(lambda: pred(self.events), timeout=WAIT), self.events
            return list(self.events)


@pytest.mark.slow
def test_a_session_and_a_jobs_events_of_one_instance_reach_the_other(
    two_instances: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = two_instances
    data_dir = Path(a.env["KVMM_DATA_DIR"])
    password = (data_dir / "initial-admin-password").read_text().strip()
    with httpx.Client(base_url=a.url, timeout=30) as on_a:
        r = on_a.post("/api/auth/login", json={"username": "admin", "password": password})
        r.raise_for_status()
        r = on_a.post(
            "/api/auth/password",
            json={"current_password": password, "new_password": password + "-changed"},
            headers={"X-CSRF-Token": r.json()["csrf_token"]},
        )
        r.raise_for_status()
        csrf = r.json()["csrf_token"]
        cookies = on_a.cookies

        with httpx.Client(base_url=b.url, timeout=30, cookies=cookies) as on_b:
            # The session made on A, with its CSRF token, acts on B.
            r = on_b.post(
                "/api/tokens", json={"name": "kvmm-t-fleet-b"}, headers={"X-CSRF-Token": csrf}
            )
            assert r.status_code in (200, 201), r.text
            # ...and without the token B refuses the same write, as A would.
            r = on_b.post("/api/tokens", json={"name": "kvmm-t-fleet-b2"})
            assert r.status_code == 403, r.text

            timeout = httpx.Timeout(30, read=WAIT)
            sse = SseReader(httpx.Client(base_url=b.url, timeout=timeout, cookies=cookies))
            assert sse.connected.wait(WAIT)
            # A job through A: a batch on A's own test-driver VM 'test'.
            r = on_a.post(
                "/api/batch/suspend",
                params={"background": "true"},
                json={"vms": [{"host": "local", "vm": "test"}]},
                headers={"X-CSRF-Token": csrf},
            )
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]

            seen = sse.wait_for(
                lambda evs: any(e["kind"] == "job.done" and e["subject"] == job_id for e in evs)
            )
            mine = [e for e in seen if e["subject"] == job_id]
            assert mine[0]["kind"] == "job.progress"
            assert mine[-1]["kind"] == "job.done" and mine[-1]["data"]["state"] == "done"
            assert mine[-1]["data"]["kind"] == "batch.suspend"
            # The job itself, read through B.
            r = on_b.get(f"/api/jobs/{job_id}")
            assert r.status_code == 200, r.text
            assert r.json()["state"] == "done"
            sse.client.close()
