"""libvirtd killed and restarted while the manager (a real server process) runs.

Same approach as tests/kvmmanager/virt/test_reconnect_libvirtd.py (SIGTERM through the
pidfile, scripts/start-libvirtd, ALWAYS restarted in `finally`), but end to end through
the API: while libvirtd is away, listing still answers from the inventory (no 500, no
hang) and host-bound writes fail with a clear 503; once it is back the host reconnects
by itself, the inventory is right again, and a create works. A second case restarts it
during a volume upload. libvirtd is shared by everyone here: these tests are
slow-marked and restart the daemon exactly once each.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import libvirt
import pytest
from tests.libvirtd_pools import libvirtd_dir_pool
from tests.reliability.conftest import ServerProcess, summary_ms

pytestmark = [pytest.mark.libvirtd, pytest.mark.slow]

URI = "qemu:///system"
PIDFILE = Path("/run/kvm-manager/libvirtd.pid")
START = Path(__file__).parents[2] / "scripts" / "start-libvirtd"


def _start_libvirtd() -> None:
    subprocess.run([str(START)], check=True, timeout=60)


def _stop_libvirtd() -> None:
    pid = int(PIDFILE.read_text().strip())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            raise AssertionError("libvirtd did not exit within 30 s of SIGTERM")
        time.sleep(0.05)


@pytest.fixture
def vm_name() -> Iterator[str]:
    """A VM name of ours; whatever was defined under it is removed afterwards."""
    name = f"kvmm-t-sec-chaos-{uuid.uuid4().hex[:6]}"
    yield name
    try:
        conn = libvirt.open(URI)
    except libvirt.libvirtError:
        return
    try:
        dom = conn.lookupByName(name)
        if dom.isActive():
            dom.destroy()
        dom.undefine()
    except libvirt.libvirtError:
        pass
    finally:
        conn.close()


def test_libvirtd_restart_under_the_api(
    server_process: Callable[..., ServerProcess],
    wait_for: Callable[..., Any],
    vm_name: str,
    figures: dict[str, Any],
) -> None:
    srv = server_process(uri=URI)
    api = srv.api()
    wait_for(lambda: api.get("/api/hosts/local").json()["status"] == "connected", 60)
    # One VM of our own, so there is always something to lose and find again.
    made = api.post("/api/hosts/local/vms", json={"name": vm_name, "memory_mib": 64})
    assert made.status_code == 201, made.text
    before = {v["uuid"] for v in api.get("/api/hosts/local/vms").json()}
    during: list[float] = []
    try:
        _stop_libvirtd()
        # The server notices (keepalive/close callback) and says so.
        wait_for(lambda: api.get("/api/hosts/local").json()["status"] != "connected", 60)
        for _ in range(20):
            t0 = time.perf_counter()
            r = api.get("/api/hosts/local/vms")
            during.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text  # from the inventory: no libvirt round trip
        create = api.post("/api/hosts/local/vms", json={"name": f"{vm_name}-x", "memory_mib": 64})
        assert create.status_code == 503, create.text
        assert create.json()["error"]["code"] == "host_unavailable"
        assert "local" in create.json()["error"]["message"]
    finally:
        _start_libvirtd()
    t_back = time.monotonic()
    wait_for(lambda: api.get("/api/hosts/local").json()["status"] == "connected", 60)
    figures["reconnected_after_s"] = round(time.monotonic() - t_back, 2)
    figures["list_while_down"] = summary_ms(during)

    def inventory_right() -> bool:
        ours = {v["uuid"] for v in api.get("/api/hosts/local/vms").json()}
        conn = libvirt.open(URI)
        try:
            truth = {d.UUIDString() for d in conn.listAllDomains(0)}
        finally:
            conn.close()
        return ours == truth

    wait_for(inventory_right, 30)
    figures["inventory_right_after_s"] = round(time.monotonic() - t_back, 2)
    assert made.json()["vm"]["uuid"] in before  # and the inventory above matched libvirt
    r = api.post("/api/hosts/local/vms", json={"name": f"{vm_name}-x", "memory_mib": 64})
    assert r.status_code == 201, r.text
    assert api.delete(f"/api/hosts/local/vms/{vm_name}-x").status_code in (200, 204)


MIB = 1024 * 1024
SENT_BEFORE_RESTART = 8 * MIB


@pytest.fixture
def upload_pool() -> Iterator[str]:
    """A persistent directory pool (it must come back with libvirtd), removed with its
    volumes afterwards (over a fresh connection: libvirtd was restarted meanwhile)."""
    with libvirtd_dir_pool("kvmm-t-sec-pool-", persistent=True) as pool:
        yield pool.name


def _volumes(pool: str) -> list[str]:
    conn = libvirt.open(URI)
    try:
        p = conn.storagePoolLookupByName(pool)
        p.refresh(0)
        return sorted(p.listVolumes())
    finally:
        conn.close()


def test_libvirtd_restart_during_volume_upload(
    server_process: Callable[..., ServerProcess],
    upload_pool: str,
    wait_for: Callable[..., Any],
    figures: dict[str, Any],
) -> None:
    """The test sends the first 8 MiB of a new volume's body, stops libvirtd once the
    job reports bytes written, and sends the rest once the server has noticed. The
    upload fails with a clear 503; the volume it created (its libvirt stream died with
    the daemon, so its own cleanup could not delete it) is removed once the host is
    connected again, and the job's message and the audit log say so."""
    srv = server_process(uri=URI)
    api = srv.api()
    wait_for(lambda: api.get("/api/hosts/local").json()["status"] == "connected", 60)
    vol = "kvmm-t-sec-upload.raw"
    size = 64 * MIB
    sent = {"bytes": 0}
    noticed = threading.Event()
    outcome: dict[str, Any] = {}

    def body() -> Iterator[bytes]:
        chunk = b"\0" * MIB
        while sent["bytes"] < size:
            if sent["bytes"] >= SENT_BEFORE_RESTART:
                noticed.wait(120)
            sent["bytes"] += len(chunk)
            yield chunk

    def upload() -> None:
        try:
            outcome["response"] = srv.api().put(
                f"/api/hosts/local/pools/{upload_pool}/volumes/{vol}/content",
                content=body(),
                params={"create": "true", "size": str(size)},
                headers={"Content-Type": "application/octet-stream"},
            )
        except httpx.HTTPError as exc:  # the server may close the request early
            outcome["error"] = exc

    t = threading.Thread(target=upload, name="kvmm-t-sec-upload", daemon=True)
    t.start()
    try:
        job = wait_for(lambda: _running(api, "volume.upload"), 60)
        done = wait_for(lambda: api.get(f"/api/jobs/{job['id']}").json()["done"], 60)
        try:
            _stop_libvirtd()
            wait_for(lambda: api.get("/api/hosts/local").json()["status"] != "connected", 60)
        finally:
            noticed.set()
            t.join(120)
            assert not t.is_alive()
            after_down = api.get(f"/api/jobs/{job['id']}").json()
            _start_libvirtd()
    finally:
        noticed.set()
    t_back = time.monotonic()
    figures["upload_bytes_written_before_libvirtd_stopped"] = done
    assert after_down["state"] == "failed", after_down
    assert after_down["error"]["code"] == "host_unavailable", after_down
    if "response" in outcome:
        r = outcome["response"]
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "host_unavailable"
    figures["upload_answer"] = (
        outcome["response"].status_code
        if "response" in outcome
        else (f"connection closed: {type(outcome['error']).__name__}")
    )
    wait_for(lambda: api.get("/api/hosts/local").json()["status"] == "connected", 60)
    figures["reconnected_after_s"] = round(time.monotonic() - t_back, 2)
    msg = wait_for(lambda: _undone(api, job["id"]), 180)
    figures["half_written_volume_removed_after_s"] = round(time.monotonic() - t_back, 2)
    assert msg.endswith(f"its half-made volume {upload_pool}/{vol}: removed"), msg
    assert vol not in _volumes(upload_pool)
    undo = api.get("/api/audit", params={"action": "jobs.undo_interrupted"}).json()
    entries = undo["items"] if isinstance(undo, dict) else undo
    assert [(e["job_id"], e["result"]) for e in entries] == [(job["id"], "ok")]
    # The manager works on the reconnected host: the same upload now succeeds.
    r = api.put(
        f"/api/hosts/local/pools/{upload_pool}/volumes/{vol}/content",
        content=b"\1" * MIB,
        params={"create": "true"},
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    assert vol in _volumes(upload_pool)


def _running(api: Any, kind: str) -> dict[str, Any] | None:
    data = api.get("/api/jobs", params={"state": "running", "kind": kind}).json()
    items = data["items"] if isinstance(data, dict) else data
    return items[0] if items else None


def _undone(api: Any, job_id: str) -> str | None:
    msg = api.get(f"/api/jobs/{job_id}").json()["error"]["message"]
    return msg if "half-made" in msg and "when the host is back" not in msg else None
