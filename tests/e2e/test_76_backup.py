"""A real backup (libvirt's backup API) of a real TCG guest, restored to a new VM.

A file is written in the guest through the agent, the VM is backed up quiesced (frozen
by the project's agent around virDomainBackupBegin), the file is changed, the backup is
verified and restored to a new VM (new name, UUID, MAC), which boots, and its agent reads
the file: the content from before the change.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import pytest

from .conftest import Lab
from .support.api import ApiError
from .support.guests import Guest

pytestmark = pytest.mark.vm
FILE = "/data/kvmm-backup.txt"


@pytest.fixture(scope="module")
def guest(lab: Lab, agent_iso: dict) -> Iterator[Guest]:
    g = lab.guest("bk", "agent", 46)
    try:
        g.create(lab.pool, lab.network)
        lab.api.install_agent(g.name, lab.pool)
        mark = g.start()
        g.wait_agent(mark, channel="kvmm")
        yield g
    finally:
        g.remove()


def read_when_up(lab: Lab, vm: str, timeout: float = 240) -> str:
    """The restored VM boots from scratch: poll its agent until it reads the file."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return lab.api.read_file(vm, FILE)["content"]
        except ApiError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_backup_quiesced_then_restore_to_a_new_vm(lab: Lab, guest: Guest) -> None:
    original = f"before the backup {uuid.uuid4().hex}"
    lab.api.write_file(guest.name, FILE, original)
    policy = f"kvmm-e2e-bk-{lab.run_id}"[:40]
    lab.api.call("POST", "/api/backup-policies", json={
        "name": policy, "vms": [], "tag": "kvmm-e2e-none", "method": "backup",
        "pool": lab.pool, "keep_last": 2, "quiesce": "require"})  # fmt: skip
    restored = f"{guest.name}-r"
    b = None
    try:
        b = lab.api.call("POST", lab.api._vm(guest.name, "backups"), json={"policy": policy})
        assert b["status"] == "ok" and b["kind"] == "full", b
        assert b["consistency"]["method"] == "kvmm-agent"
        assert b["consistency"]["level"] == "quiesced", b["consistency"]
        # The guest was frozen only while the job started, never for the copy.
        assert b["consistency"]["frozen_seconds"] < 30

        lab.api.write_file(guest.name, FILE, "changed after the backup")
        v = lab.api.call("POST", lab.api._vm(guest.name, f"backups/{b['id']}/verify"))
        assert v["status"] == "ok", v

        r = lab.api.call(
            "POST",
            lab.api._vm(guest.name, f"backups/{b['id']}/restore"),
            json={"mode": "new", "name": restored, "start": True},
        )
        assert r["uuid"] != guest.uuid
        assert read_when_up(lab, restored) == original
        assert lab.api.read_file(guest.name, FILE)["content"] == "changed after the backup"
    finally:
        with contextlib.suppress(ApiError):
            lab.api.action(restored, "destroy")
        with contextlib.suppress(ApiError):
            lab.api.delete_vm(restored)
        if b is not None:
            with contextlib.suppress(ApiError):
                lab.api.call("DELETE", lab.api._vm(guest.name, f"backups/{b['id']}"))
        with contextlib.suppress(ApiError):
            lab.api.call("DELETE", f"/api/backup-policies/{policy}")
