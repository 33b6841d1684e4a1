"""libvirtd killed and restarted while the manager (a real server process) runs.

Same approach as tests/kvmmanager/virt/test_reconnect_libvirtd.py (SIGTERM through the
pidfile, scripts/start-libvirtd, ALWAYS restarted in `finally`), but end to end through
the API: while libvirtd is away, listing still answers from the inventory (no 500, no
hang) and host-bound writes fail with a clear 503; once it is back the host reconnects
by itself, the inventory is right again, and a create works. libvirtd is shared by
everyone here: this test is slow-marked and restarts the daemon exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
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
