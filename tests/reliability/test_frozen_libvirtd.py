"""A libvirtd that stops answering (SIGSTOP) under a running manager, and a manager killed
(SIGKILL) during its accelerator probe.

The daemon frozen here is a PRIVATE one (tests/migration/second_host.py: its own config,
sockets, runtime dirs and namespaces), never the shared qemu:///system, which other test
runs use at the same time. The shared daemon serves as the healthy second host beside it:
the manager only reads from it.

The freeze lasts FREEZE_SECONDS (12 s) instead of the 30 s of issue 21: the manager under
test runs with deadlines and keepalive scaled down (read 3 s, lifecycle 5 s, heartbeat
1 s, not responding after 2 s unanswered, keepalive 2 s x 4), so the freeze outlasts every
deadline and the keepalive verdict by several times and everything the 30 s freeze shows
happens inside it: live calls fail cleanly at their deadline, the host goes
`not responding` and stays so after keepalive closes the connection (the reopen waits for
the frozen daemon), inventory-backed reads keep answering, the other host is untouched,
and after SIGCONT the host is `connected` again with a correct inventory. No timing is
asserted: each request has a client timeout of its deadline plus a margin (a bound, not a
measurement), and the figures are printed.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import libvirt
import pytest
from tests.migration.second_host import SecondHost
from tests.reliability.conftest import ServerProcess, frozen, summary_ms

from kvmmanager.virt.owner import process_start, this_process
from kvmmanager.virt.probe import probe_guest_name
from kvmmanager.virt.xml.domain import Domain

pytestmark = [pytest.mark.libvirtd, pytest.mark.slow]

LOCAL_URI = "qemu:///system"
FROZEN = "kvmm-t-frz"  # the frozen host's name in the manager
READ_S, LIFECYCLE_S = 3, 5
MARGIN_S = 10  # client-side bound on top of a deadline: answer or fail the test
FREEZE_SECONDS = 12.0
SCALED_DOWN = {
    "KVMM_LIBVIRT__DEADLINE_READ_SECONDS": str(READ_S),
    "KVMM_LIBVIRT__DEADLINE_LIFECYCLE_SECONDS": str(LIFECYCLE_S),
    "KVMM_LIBVIRT__HEARTBEAT_SECONDS": "1",
    "KVMM_LIBVIRT__NOT_RESPONDING_SECONDS": "2",
    # The heartbeat must see the freeze (<= 3 s) well before keepalive would end the
    # connection (8-10 s): it pauses keepalive while calls wait (virt/liveness.py).
    "KVMM_LIBVIRT__KEEPALIVE_INTERVAL": "2",
    "KVMM_LIBVIRT__KEEPALIVE_COUNT": "4",
}


class EventLog:
    """The UI's SSE stream (GET /api/events) read in a thread: every event it delivers."""

    def __init__(self, srv: ServerProcess) -> None:
        self.events: list[dict[str, Any]] = []
        self.open = threading.Event()
        self._client = srv.api()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kvmm-t-frz-sse", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with (
            contextlib.suppress(httpx.HTTPError),
            self._client.stream("GET", "/api/events", timeout=None) as r,
        ):
            self.open.set()
            for line in r.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("data:"):
                    with contextlib.suppress(ValueError):
                        self.events.append(json.loads(line[5:]))

    def statuses(self, host: str) -> list[str]:
        return [
            e["data"]["status"]
            for e in list(self.events)
            if e.get("kind") == "host.status" and e.get("host") == host
        ]

    def close(self) -> None:
        self._stop.set()
        self._client.close()


def _status(api: httpx.Client, host: str) -> str:
    return api.get(f"/api/hosts/{host}").json()["status"]


def _truth(host: SecondHost) -> set[str]:
    conn = host.open()
    try:
        return {d.UUIDString() for d in conn.listAllDomains(0)}
    finally:
        conn.close()


@contextlib.contextmanager
def _web_session(srv: ServerProcess) -> Iterator[httpx.Client]:
    """A browser's session (cookie login) for the HTML pages."""
    password = (Path(srv.env["KVMM_DATA_DIR"]) / "initial-admin-password").read_text().strip()
    with httpx.Client(base_url=srv.url, timeout=30) as web:
        web.post("/api/auth/login", json={"username": "admin", "password": password})
        yield web


def test_frozen_libvirtd_under_the_manager_with_a_healthy_host_beside_it(
    private_host: SecondHost,
    server_process: Callable[..., ServerProcess],
    wait_for: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    figures: dict[str, Any],
) -> None:
    for key, value in SCALED_DOWN.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("KVMM_LIBVIRT__ACCEL", "tcg")  # the probe has its own test below
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")  # a crash of the server shows where
    srv = server_process(uri=LOCAL_URI)
    api = srv.api()
    wait_for(lambda: _status(api, "local") == "connected", 60)
    added = api.post("/api/hosts", json={"name": FROZEN, "uri": private_host.uri})
    assert added.status_code in (200, 201), added.text
    wait_for(lambda: _status(api, FROZEN) == "connected", 60)
    vm = f"kvmm-t-frz-{uuid.uuid4().hex[:6]}"
    made = api.post(f"/api/hosts/{FROZEN}/vms", json={"name": vm, "memory_mib": 64})
    assert made.status_code == 201, made.text
    sse = EventLog(srv)
    wait_for(sse.open.is_set, 30)
    local_pools_during: list[int] = []
    inventory_reads: list[float] = []
    outcome: dict[str, Any] = {}
    try:
        with frozen(private_host):
            t_frozen = time.monotonic()

            def create() -> None:
                try:
                    outcome["create"] = api.post(
                        f"/api/hosts/{FROZEN}/vms",
                        json={"name": f"{vm}-b", "memory_mib": 64},
                        timeout=LIFECYCLE_S + MARGIN_S,
                    )
                except httpx.HTTPError as exc:  # no answer within the bound: a failure
                    outcome["create_error"] = repr(exc)

            creator = threading.Thread(target=create, name="kvmm-t-frz-create", daemon=True)
            creator.start()
            # A live call right away: a clean 504 (deadline) or 503 (already marked not
            # responding), naming the host, within its deadline plus the margin.
            live = api.get(f"/api/hosts/{FROZEN}/pools", timeout=READ_S + MARGIN_S)
            assert live.status_code in (503, 504), live.text
            assert f"'{FROZEN}'" in live.json()["error"]["message"]
            if live.status_code == 504:
                assert "may still complete" in live.json()["error"]["message"]
            wait_for(lambda: _status(api, FROZEN) == "not responding", 30)
            figures["not_responding_after_s"] = round(time.monotonic() - t_frozen, 2)
            creator.join(LIFECYCLE_S + MARGIN_S + 5)
            assert "create_error" not in outcome, outcome
            create = outcome["create"]
            assert create.status_code in (503, 504), create.text
            assert f"'{FROZEN}'" in create.json()["error"]["message"]
            # Refused up front now, with the reason.
            act = api.post(f"/api/hosts/{FROZEN}/vms/{vm}/actions/start", timeout=MARGIN_S)
            assert act.status_code == 503, act.text
            assert "not responding" in act.json()["error"]["message"]
            while time.monotonic() - t_frozen < FREEZE_SECONDS:
                t0 = time.perf_counter()
                listed = api.get(f"/api/hosts/{FROZEN}/vms", timeout=MARGIN_S)
                everything = api.get("/api/vms", timeout=MARGIN_S)
                inventory_reads.append(time.perf_counter() - t0)
                assert listed.status_code == 200 and everything.status_code == 200
                assert vm in {v["name"] for v in listed.json()}
                # The healthy host beside it keeps answering live calls.
                local_pools_during.append(
                    api.get("/api/hosts/local/pools", timeout=READ_S + MARGIN_S).status_code
                )
                assert _status(api, "local") == "connected"
                time.sleep(0.5)
            # Still frozen, past every deadline and the keepalive horizon: still not
            # responding, shown everywhere.
            hosts = {h["name"]: h for h in api.get("/api/hosts").json()}
            assert hosts[FROZEN]["status"] == "not responding"
            assert hosts[FROZEN]["stale_since"] is not None
            assert hosts["local"]["status"] == "connected"
            prom = api.get("/metrics").text
            assert f'kvmm_host_status{{host="{FROZEN}",status="not responding"}} 1.0' in prom
            assert 'kvmm_host_status{host="local",status="connected"} 1.0' in prom
            with _web_session(srv) as web:
                page = web.get("/vms", params={"host": FROZEN}).text
                assert "data-stale" in page and "stale" in page
                dash = web.get("/").text
                assert "status-not-responding" in dash
    finally:
        t_thawed = time.monotonic()
    try:
        wait_for(lambda: _status(api, FROZEN) == "connected", 60)
        figures["connected_again_after_s"] = round(time.monotonic() - t_thawed, 2)

        def inventory_right() -> bool:
            ours = {v["uuid"] for v in api.get(f"/api/hosts/{FROZEN}/vms").json()}
            return ours == _truth(private_host)

        wait_for(inventory_right, 30)
        wait_for(lambda: "connected" in sse.statuses(FROZEN)[1:], 30)
        seen = sse.statuses(FROZEN)
        assert "not responding" in seen, seen
        assert seen.index("not responding") < len(seen) - 1 - seen[::-1].index("connected")
        assert sse.statuses("local") == []  # the healthy host never changed status
        assert set(local_pools_during) == {200}, local_pools_during
        # Live calls work again.
        assert api.get(f"/api/hosts/{FROZEN}/pools").status_code == 200
    finally:
        sse.close()
    figures["inventory_reads_while_frozen"] = summary_ms(inventory_reads)
    figures["create_while_frozen"] = outcome["create"].status_code


def _probe_guests_on(conn: libvirt.virConnect) -> list[str]:
    return [d.name() for d in conn.listAllDomains(0) if d.name().startswith("kvmm-accel-probe-")]


def _probe_guests(host: SecondHost) -> list[str]:
    conn = host.open()
    try:
        return _probe_guests_on(conn)
    finally:
        conn.close()


def test_manager_killed_during_the_probe_leaves_no_probe_guest_after_restart(
    private_host: SecondHost,
    server_process: Callable[..., ServerProcess],
    wait_for: Callable[..., Any],
    figures: dict[str, Any],
) -> None:
    """The probe starts in the background at connect: kill -9 the manager as soon as its
    probe guest runs; the guest outlives it; a restart on the same data removes it."""
    assert _probe_guests(private_host) == []
    watch = private_host.open()
    try:
        srv = server_process(uri=private_host.uri)
        still: list[str] = []
        # A probe guest lives from a fraction of a second to a few seconds: the kill may
        # land after it was destroyed. Then start again (a new probe) and retry.
        for attempt in range(1, 6):
            if attempt > 1:
                srv.start()
            wait_for(lambda: _probe_guests_on(watch), 120, every=0.005)
            srv.kill()
            still = _probe_guests_on(watch)
            if still:
                break
        figures["kill_attempts"] = attempt
    finally:
        watch.close()
    assert still, "every kill landed after the probe guest was gone: nothing tested"
    figures["probe_guests_after_kill"] = len(still)
    srv.start()  # same data dir, new process
    wait_for(lambda: not set(still) & set(_probe_guests(private_host)), 60)
    figures["restart_removed"] = still
    # (The restarted manager's own probe may still run when the test ends: a stop during
    # it can leave its guest too, for the next start to remove; the private host's
    # teardown destroys whatever is left.)


def test_a_live_managers_probe_guest_is_left_alone(
    private_host: SecondHost,
    server_process: Callable[..., ServerProcess],
    wait_for: Callable[..., Any],
) -> None:
    """A probe guest named for a live process on this machine (another manager whose probe
    runs) survives a manager's start-up sweep."""
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        owner = replace(this_process(), pid=sleeper.pid, start=process_start(sleeper.pid) or 0)
        name = probe_guest_name(owner)
        conn = private_host.open()
        try:
            dom = Domain(type="qemu", name=name, memory=32 * 1024, vcpus=1)
            dom.os.os_type, dom.os.arch = "hvm", "x86_64"
            conn.createXML(dom.to_xml(), 0)
        finally:
            conn.close()
        srv = server_process(uri=private_host.uri)
        api = srv.api()
        wait_for(lambda: api.get("/api/hosts/local").json()["status"] == "connected", 60)
        # Its own probe runs and finishes (its guests come and go); ours stays.
        wait_for(lambda: api.get("/api/hosts/local/info").status_code == 200, 120)
        assert name in _probe_guests(private_host)
    finally:
        sleeper.kill()
        sleeper.wait(30)
        with contextlib.suppress(libvirt.libvirtError):
            conn = private_host.open()
            try:
                conn.lookupByName(name).destroy()
            finally:
                conn.close()
