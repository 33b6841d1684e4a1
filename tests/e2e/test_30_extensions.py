"""Scenario 3: the extension methods on the real guest: metrics, processes, users, time,
ssh keys, services, a 20 MB chunked transfer both ways with sha256, fsfreeze/thaw and
the agent's own thaw when the host goes away."""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import time

import pytest

from .conftest import Fleet, Lab
from .support.api import ApiError

pytestmark = pytest.mark.vm


def test_metrics(lab: Lab, fleet: Fleet) -> None:
    r = lab.api.agent(fleet.agent.name, "metrics")
    assert 0 <= r["cpu_percent"] <= 100
    assert r["memory"]["total_kb"] > 0
    assert any(f["mount_point"] == "/data" for f in r["filesystems"])
    assert any(n["name"] == "eth0" for n in r["network"])


def test_processes_include_the_supervised_agent(lab: Lab, fleet: Fleet) -> None:
    r = lab.api.agent(fleet.agent.name, "processes")
    procs = r["processes"]
    assert any(p["pid"] == 1 for p in procs)
    # Started from the zipapp, the agent re-executes itself on its bytecode cache
    # (/var/cache/kvmmanager-agent/<key>/kvmmanager-agent), same pid.
    assert any("/var/cache/kvmmanager-agent/" in str(p["cmdline"]) for p in procs)


def test_users_show_the_console_login(lab: Lab, fleet: Fleet) -> None:
    r = lab.api.agent(fleet.agent.name, "users")
    assert any(u["user"] == "root" and u["terminal"] == "ttyS0" for u in r["users"])


def test_time(lab: Lab, fleet: Fleet) -> None:
    r = lab.api.agent(fleet.agent.name, "time")
    # The guest clock comes from the host's RTC at boot: same wall clock, within a minute.
    assert abs(float(r["timestamp"]) - time.time()) < 60


def test_ssh_authorized_keys(lab: Lab, fleet: Fleet) -> None:
    vm = fleet.agent.name
    # A well-formed ed25519 public key: string "ssh-ed25519" + string <32 random bytes>.
    blob = b"".join(struct.pack(">I", len(p)) + p for p in (b"ssh-ed25519", os.urandom(32)))
    key = f"ssh-ed25519 {base64.b64encode(blob).decode()} kvmm-e2e"
    lab.api.agent(vm, "ssh-keys", "POST", json={"user": "e2e", "key": key})
    listed = lab.api.agent(vm, "ssh-keys", params={"user": "e2e"})
    assert key in [k if isinstance(k, str) else k.get("key") for k in listed["keys"]]
    lab.api.agent(vm, "ssh-keys", "DELETE", json={"user": "e2e", "key": key})
    listed = lab.api.agent(vm, "ssh-keys", params={"user": "e2e"})
    assert key not in [k if isinstance(k, str) else k.get("key") for k in listed["keys"]]


def test_services_without_a_service_manager_say_so(lab: Lab, fleet: Fleet) -> None:
    # This guest has neither systemd nor OpenRC: a clear error, not a crash or a lie.
    with pytest.raises(ApiError) as err:
        lab.api.agent(fleet.agent.name, "services/kvmmanager-agent")
    assert 400 <= err.value.status < 600 and err.value.status != 500


def test_chunked_transfer_20mb_both_ways(lab: Lab, fleet: Fleet) -> None:
    vm = fleet.agent.name
    data = os.urandom(20 * 1024 * 1024)
    digest = hashlib.sha256(data).hexdigest()
    started = time.monotonic()
    up = lab.api.upload(vm, "/data/e2e-20mb.bin", data)
    up_s = time.monotonic() - started
    assert up.get("sha256", digest) == digest
    assert lab.api.exec(vm, "sha256sum", "/data/e2e-20mb.bin")["stdout"].split()[0] == digest
    started = time.monotonic()
    back = lab.api.download(vm, "/data/e2e-20mb.bin")
    down_s = time.monotonic() - started
    assert hashlib.sha256(back).hexdigest() == digest
    (lab.log_dir / "transfer.txt").write_text(
        f"upload {20 / up_s:.2f} MB/s, download {20 / down_s:.2f} MB/s\n"
    )


def _freeze_state(lab: Lab, vm: str) -> str:
    return lab.api.agent(vm, "fsfreeze")["status"]


def test_fsfreeze_then_thaw(lab: Lab, fleet: Fleet) -> None:
    vm = fleet.agent.name
    r = lab.api.agent(vm, "fsfreeze/freeze", "POST")
    assert r["frozen"] >= 1  # /data is a real block-device file system
    assert _freeze_state(lab, vm) == "frozen"
    # While frozen only a safe set of methods runs; a write would block: refused.
    with pytest.raises(ApiError):
        lab.api.write_file(vm, "/data/while-frozen.txt", "x")
    lab.api.agent(vm, "fsfreeze/thaw", "POST")
    assert _freeze_state(lab, vm) == "thawed"
    lab.api.write_file(vm, "/data/after-thaw.txt", "ok")


def test_fsfreeze_auto_thaw_when_the_host_goes_away(lab: Lab, fleet: Fleet) -> None:
    """Freeze /data for 10 s and never thaw (the host "disappeared"): the agent thaws by
    itself. Only /data is named, so this checks the auto-thaw on its own."""
    vm = fleet.agent.name
    params = {"mount_points": ["/data"], "timeout_seconds": 10}
    r = lab.api.agent(vm, "call/fsfreeze_freeze", "POST", json=params)
    assert r["frozen"] == 1
    assert _freeze_state(lab, vm) == "frozen"
    deadline = time.monotonic() + 90
    state = "frozen"
    while state == "frozen" and time.monotonic() < deadline:
        time.sleep(2)  # polling the guest's own state with a generous deadline
        state = _freeze_state(lab, vm)
    assert state == "thawed"
    lab.api.write_file(vm, "/data/after-auto-thaw.txt", "ok")
