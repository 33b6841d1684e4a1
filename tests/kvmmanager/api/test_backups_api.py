"""Backup policy routes (create, read, run sync and as a job, delete, roles, errors
naming the field) and `kvm-manager backup` against a live server (test driver)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import libvirt
import pytest


def _cleanup() -> None:
    conn = libvirt.open("test:///default")
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith("kvmm-t-ops-"):
                for snap in dom.listAllSnapshots():
                    snap.delete()
                dom.undefine()
        for vol in conn.storagePoolLookupByName("default-pool").listAllVolumes():
            if vol.name().startswith("kvmm-t-ops-"):
                vol.delete(0)
    finally:
        conn.close()


def _wait(cond: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := cond():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def vm(client):
    host = client.app.state.manager.registry.get("local")
    _wait(lambda: host.connected, "the local host")
    name = f"kvmm-t-ops-{uuid.uuid4().hex[:8]}"
    disk = {"pool": "default-pool", "size_gib": 1}
    r = client.post("/api/hosts/local/vms", json={"name": name, "memory_mib": 64, "disks": [disk]})
    assert r.status_code == 201, r.text
    yield name
    _cleanup()


def test_policy_crud_run_and_roles(client, client_as, vm):
    body = {"name": "kvmm-t-ops-p", "vms": [{"host": "local", "vm": vm}], "keep_last": 1}
    r = client.post("/api/backup-policies", json=body)
    assert r.status_code == 201, r.text
    viewer = client_as("viewer")
    assert viewer.get("/api/backup-policies").json()[0]["name"] == "kvmm-t-ops-p"
    assert viewer.post("/api/backup-policies/kvmm-t-ops-p/run").status_code == 403

    r = client.post("/api/backup-policies/kvmm-t-ops-p/run")
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["status"] == "ok", first["results"]
    assert first["results"][0]["snapshot"] == first["snapshot"]

    r = client.post("/api/backup-policies/kvmm-t-ops-p/run?background=true")
    assert r.status_code == 202
    job_id = r.json()["job_id"]
    job = _wait(lambda: (j := client.get(f"/api/jobs/{job_id}").json())["state"] != "running"
                and j["state"] != "queued" and j, "the backup job")  # fmt: skip
    assert job["state"] == "done", job
    # keep_last 1: the second run pruned the first snapshot (a run in the same second
    # gets a "-1" suffix, not a clash).
    assert job["result"]["status"] == "ok", job["result"]
    assert job["result"]["results"][0]["pruned"] == [first["snapshot"]]

    assert client.get("/api/backup-policies/kvmm-t-ops-p").json()["last_status"] == "ok"
    backups = client.get(f"/api/backup-policies/kvmm-t-ops-p/backups/local/{vm}").json()
    latest = job["result"]["results"][0]["snapshot"]
    assert [b["name"] for b in backups] == [latest]
    restore = {"host": "local", "vm": vm, "snapshot": latest}
    r = client.post("/api/backup-policies/kvmm-t-ops-p/restore", json=restore)
    assert r.status_code == 422 and r.json()["error"]["field"] == "confirm"
    assert viewer.post("/api/backup-policies/kvmm-t-ops-p/restore",
                       json={**restore, "confirm": True}).status_code == 403  # fmt: skip
    r = client.post("/api/backup-policies/kvmm-t-ops-p/restore", json={**restore, "confirm": True})
    assert r.status_code == 200 and r.json()["snapshot"] == latest
    assert client.delete("/api/backup-policies/kvmm-t-ops-p").status_code == 204
    assert client.post("/api/backup-policies/kvmm-t-ops-p/run").status_code == 404


def test_bad_policies_are_422_naming_the_field(client):
    r = client.post("/api/backup-policies", json={"name": "p", "tag": "x", "keep_last": -1})
    assert r.status_code == 422 and r.json()["error"]["field"] == "keep_last"
    r = client.post("/api/backup-policies", json={"name": "p"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "vms"


def test_cli_backup(cli, live_server):
    host = live_server.manager.registry.get("local")
    _wait(lambda: host.connected, "the local host")
    name = f"kvmm-t-ops-{uuid.uuid4().hex[:8]}"
    try:
        r = cli("vm", "create", name, "--memory", "64", "--disk", "default-pool:1")
        assert r.exit_code == 0, r.stderr
        r = cli("backup", "add", "kvmm-t-ops-c", name, "--keep-last", "2", "--keep-daily", "7")
        assert r.exit_code == 0, r.stderr
        r = cli("--json", "backup", "run", "kvmm-t-ops-c")
        assert r.exit_code == 0, r.stderr
        assert json.loads(r.stdout)["succeeded"] == 1
        snap = json.loads(r.stdout)["results"][0]["snapshot"]
        r = cli("backup", "list")
        assert "kvmm-t-ops-c" in r.stdout and "ok" in r.stdout
        r = cli("--json", "backup", "backups", "kvmm-t-ops-c", name)
        assert [b["name"] for b in json.loads(r.stdout)] == [snap]
        r = cli("backup", "restore", "kvmm-t-ops-c", name, snap, input="n\n")
        assert r.exit_code == 2 and "confirm" in r.stderr
        r = cli("--json", "backup", "restore", "kvmm-t-ops-c", name, snap, "--yes")
        assert r.exit_code == 0, r.stderr
        r = cli("schedule", "add", "kvmm-t-ops-cs", "backup", "--policy", "kvmm-t-ops-c",
                "--kind", "daily", "--at", "01:00")  # fmt: skip
        assert r.exit_code == 0, r.stderr
        r = cli("schedule", "add", "kvmm-t-ops-cs2", "backup", "--policy", "nope",
                "--kind", "daily", "--at", "01:00")  # fmt: skip
        assert r.exit_code == 4 and "nope" in r.stderr
        assert cli("backup", "remove", "kvmm-t-ops-c").exit_code == 0
    finally:
        _cleanup()
