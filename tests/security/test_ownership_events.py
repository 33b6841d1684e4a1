"""Attack on the live event stream (issue 14): /api/events streamed every user's job
progress and results (export bundle ids among them) to viewers and other operators. Now
a client sees only the events about what it may read through the REST API
(services/ownership.event_visible). Real server (uvicorn) and real SSE clients."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kvmmanager.virt.events import Event

DEADLINE = 60
STOP = "kvmm-t-ownev-stop"


class Listener:
    """An SSE client on its own thread, keeping every event it receives until STOP."""

    def __init__(self, url: str, token: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.subscribed = threading.Event()
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, token), daemon=True)
        self._thread.start()

    def _run(self, url: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.stream(
            "GET",
            f"{url}/api/events",
            params={"kind": ["job.", STOP]},
            headers=headers,
            timeout=DEADLINE,
        ) as r:
            assert r.status_code == 200
            self.subscribed.set()
            current: dict[str, Any] = {}
            for line in r.iter_lines():
                if line.startswith("event:"):
                    current["event"] = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    current["data"] = json.loads(line.split(":", 1)[1])
                elif line == "" and current:
                    self.events.append(current)
                    if current.get("event") == STOP:
                        break
                    current = {}
        self.done.set()

    def jobs(self) -> set[str]:
        return {e["data"]["subject"] for e in self.events if e["event"].startswith("job.")}


@pytest.fixture
def users(live_server: Any) -> Iterator[dict[str, str]]:
    m = live_server.app.state.manager
    tokens = {"admin": live_server.token}
    for who, role in (("bob", "operator"), ("mallory", "operator"), ("vera", "viewer")):
        m.users.create(f"kvmm-t-ownev-{who}", "kvmm-t-ownev-password", role)
        tokens[who] = m.users.create_token(f"kvmm-t-ownev-{who}", "t")[1]
    yield tokens


def _job(url: str, token: str) -> str:
    """A real job of that user: a batch on a VM that does not exist (it fails per VM)."""
    headers = {"Authorization": f"Bearer {token}"}
    r = httpx.post(
        f"{url}/api/batch/start",
        params={"background": True},
        headers=headers,
        json={"vms": [{"host": "local", "vm": "kvmm-t-ownev-none"}]},
        timeout=DEADLINE,
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + DEADLINE
    while httpx.get(f"{url}/api/jobs/{job_id}", headers=headers).json()["state"] != "done":
        assert time.monotonic() < deadline, "the job never finished"
        time.sleep(0.05)
    return job_id


def test_job_events_reach_only_who_may_read_the_job(
    live_server: Any, users: dict[str, str]
) -> None:
    m = live_server.app.state.manager
    base = m.bus.subscriber_count
    listeners = {who: Listener(live_server.url, users[who]) for who in ("admin", "mallory", "vera")}
    for lst in listeners.values():
        assert lst.subscribed.wait(DEADLINE)
    deadline = time.monotonic() + DEADLINE
    while m.bus.subscriber_count < base + len(listeners):
        assert time.monotonic() < deadline, "an SSE client never subscribed"
        time.sleep(0.02)
    bobs = _job(live_server.url, users["bob"])
    mallorys = _job(live_server.url, users["mallory"])
    m.loop.call_soon_threadsafe(m.bus.publish, Event(STOP, host=""))
    for lst in listeners.values():
        assert lst.done.wait(DEADLINE)
    assert listeners["admin"].jobs() == {bobs, mallorys}
    assert listeners["mallory"].jobs() == {mallorys}
    assert listeners["vera"].jobs() == set()
    # What mallory did see is her job whole: progress and the final result.
    kinds = [e["event"] for e in listeners["mallory"].events]
    assert "job.done" in kinds and kinds[-1] == STOP
