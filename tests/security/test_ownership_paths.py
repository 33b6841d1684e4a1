"""Attacks on per-user ownership where the object is not a VM in the URL path (issue 14,
"High"): an operator ("mallory") goes after another operator's ("bob") VM through a
schedule, a backup policy, a job id and an export bundle id. Real app, real database,
libvirt's test driver. The one rule under test: services/ownership.may_act."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.testdriver_cleanup import purge

PREFIX = "kvmm-t-own-"
BOB_VM, MAL_VM = f"{PREFIX}bob", f"{PREFIX}mallory"
TAG = "kvmm-t-own-tag"


def _wait(fn: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out := fn():
            return out
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def env(client: TestClient, role_client: Callable[[str], TestClient]) -> Iterator[dict[str, Any]]:
    admin = role_client("admin")
    bob, mallory = role_client("operator"), role_client("operator")
    purge(PREFIX)
    for name, owner in ((BOB_VM, bob.kvmm_username), (MAL_VM, mallory.kvmm_username)):  # type: ignore[attr-defined]
        r = admin.post(
            "/api/hosts/local/vms",
            json={
                "name": name,
                "memory_mib": 128,
                "owner": owner,
                "tags": [TAG],
                "start": True,
                "disks": [{"pool": "default-pool", "size_gib": 1}],
            },
        )
        assert r.status_code == 201, r.text
    yield {"admin": admin, "bob": bob, "mallory": mallory, "manager": client.app.state.manager}
    purge(PREFIX)


def _state(c: TestClient, vm: str) -> str:
    return c.get(f"/api/hosts/local/vms/{vm}").json()["state"]


def _fire(manager: Any, c: TestClient, schedule: str, when: datetime) -> dict[str, Any]:
    """Move the scheduler's clock past `when` and return the schedule's finished run."""
    manager.scheduler.clock = lambda: when
    manager.scheduler.wake()
    hour = when.strftime("%Y-%m-%dT%H")

    def finished() -> list[dict[str, Any]]:
        runs = c.get(f"/api/schedules/{schedule}/runs").json()
        return [r for r in runs if r["status"] != "running" and r["due_at"].startswith(hour)]

    runs = _wait(finished, f"a run of {schedule}")
    return runs[0]


def test_a_schedule_cannot_name_or_reach_another_users_vm(env: dict[str, Any]) -> None:
    """Found: a schedule force-stopped another operator's VM (the scheduler ran batch
    actions with no actor)."""
    mallory, bob, admin, m = env["mallory"], env["bob"], env["admin"], env["manager"]
    start = datetime(2026, 5, 1, 0, 0, tzinfo=UTC)
    m.scheduler.clock = lambda: start
    daily = {"action": "destroy", "kind": "cron", "cron": "0 * * * *"}
    # Naming bob's VM is refused when the schedule is made.
    r = mallory.post(
        "/api/schedules",
        json={**daily, "name": f"{PREFIX}named", "vms": [{"host": "local", "vm": BOB_VM}]},
    )
    assert r.status_code == 403, r.text
    assert f"vm '{BOB_VM}' belongs to '{bob.kvmm_username}'" in r.json()["error"]["message"]
    # A tag reaches both VMs: when it fires, it acts with mallory's rights only.
    r = mallory.post("/api/schedules", json={**daily, "name": f"{PREFIX}tag", "tag": TAG})
    assert r.status_code == 201, r.text
    run = _fire(m, mallory, f"{PREFIX}tag", start + timedelta(hours=1, seconds=1))
    assert run["status"] == "partial", run
    refused = [x for x in run["result"]["results"] if not x["ok"]]
    assert [x["vm"] for x in refused] == [BOB_VM]
    assert refused[0]["error"]["code"] == "forbidden"
    assert _state(admin, BOB_VM) == "running"
    assert _state(admin, MAL_VM) == "shutoff"
    # Bob's schedule is bob's: mallory cannot change, disable or delete it.
    r = bob.post(
        "/api/schedules",
        json={
            **daily,
            "name": f"{PREFIX}bobs",
            "action": "start",
            "vms": [{"host": "local", "vm": BOB_VM}],
        },
    )
    assert r.status_code == 201, r.text
    for method, path, body in (
        ("PUT", f"/api/schedules/{PREFIX}bobs", {**daily, "name": f"{PREFIX}bobs", "tag": TAG}),
        ("POST", f"/api/schedules/{PREFIX}bobs/disable", None),
        ("DELETE", f"/api/schedules/{PREFIX}bobs", None),
    ):
        r = mallory.request(method, path, json=body)
        assert r.status_code == 403, (method, path, r.text)
    assert bob.get(f"/api/schedules/{PREFIX}bobs").json()["enabled"] is True
    # Demoted to viewer since: the schedule loses its power when it next fires.
    admin.patch(f"/api/users/{mallory.kvmm_username}", json={"role": "viewer"})
    mallory_vm_start = admin.post(f"/api/hosts/local/vms/{MAL_VM}/actions/start")
    assert mallory_vm_start.status_code == 200, mallory_vm_start.text
    run = _fire(m, admin, f"{PREFIX}tag", start + timedelta(hours=2, seconds=1))
    assert run["status"] == "failed" and "now a viewer" in run["message"], run
    assert _state(admin, MAL_VM) == "running"
    # Deleted since: the same.
    admin.patch(f"/api/users/{mallory.kvmm_username}", json={"role": "operator"})
    assert admin.delete(f"/api/users/{mallory.kvmm_username}").status_code == 204
    run = _fire(m, admin, f"{PREFIX}tag", start + timedelta(hours=3, seconds=1))
    assert run["status"] == "failed" and "no longer exists" in run["message"], run
    assert _state(admin, MAL_VM) == "running" and _state(admin, BOB_VM) == "running"


def test_a_backup_policy_cannot_snapshot_or_revert_another_users_vm(env: dict[str, Any]) -> None:
    """Found: a backup policy snapshotted and then reverted another operator's VM."""
    mallory, bob, admin = env["mallory"], env["bob"], env["admin"]
    r = mallory.post(
        "/api/backup-policies",
        json={"name": "kvmm-t-own-named", "vms": [{"host": "local", "vm": BOB_VM}]},
    )
    assert r.status_code == 403, r.text
    r = mallory.post("/api/backup-policies", json={"name": "kvmm-t-own-tag", "tag": TAG})
    assert r.status_code == 201, r.text
    r = mallory.post("/api/backup-policies/kvmm-t-own-tag/run")
    assert r.status_code == 200, r.text
    by_vm = {x["vm"]: x for x in r.json()["results"]}
    assert by_vm[MAL_VM]["ok"] and not by_vm[BOB_VM]["ok"], by_vm[MAL_VM]["error"]
    assert by_vm[BOB_VM]["error"]["code"] == "forbidden"
    bob_snaps = admin.get(f"/api/hosts/local/vms/{BOB_VM}/snapshots").json()
    assert not [s for s in bob_snaps["snapshots"] if s["name"].startswith("kvmm-t-own-tag")]
    # Bob's policy snapshots bob's VM; mallory may neither run it nor revert bob's VM to it.
    r = bob.post(
        "/api/backup-policies",
        json={"name": "kvmm-t-own-bobs", "vms": [{"host": "local", "vm": BOB_VM}]},
    )
    assert r.status_code == 201, r.text
    snap = bob.post("/api/backup-policies/kvmm-t-own-bobs/run").json()["snapshot"]
    assert mallory.post("/api/backup-policies/kvmm-t-own-bobs/run").status_code == 403
    assert mallory.delete("/api/backup-policies/kvmm-t-own-bobs").status_code == 403
    # Her own policy's restore route naming bob's VM in the body: refused before libvirt.
    r = mallory.post(
        "/api/backup-policies/kvmm-t-own-tag/restore",
        json={"host": "local", "vm": BOB_VM, "snapshot": snap, "confirm": True},
    )
    assert r.status_code == 403, r.text
    assert "belongs to" in r.json()["error"]["message"]
    assert bob.get("/api/backup-policies/kvmm-t-own-bobs").status_code == 200


def test_another_users_job_cannot_be_read_listed_or_cancelled(env: dict[str, Any]) -> None:
    """Found: job cancel had no owner check (and job results name private objects)."""
    mallory, bob = env["mallory"], env["bob"]
    r = bob.post(
        "/api/batch/suspend",
        params={"background": True},
        json={"vms": [{"host": "local", "vm": BOB_VM}]},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert bob.get(f"/api/jobs/{job_id}").status_code == 200
    # Reading another user's job: as if it did not exist; cancelling it: refused.
    assert mallory.get(f"/api/jobs/{job_id}").status_code == 404
    r = mallory.post(f"/api/jobs/{job_id}/cancel")
    assert r.status_code == 403 and "belongs to" in r.json()["error"]["message"], r.text
    assert job_id not in {j["id"] for j in mallory.get("/api/jobs").json()["items"]}
    assert job_id in {j["id"] for j in bob.get("/api/jobs").json()["items"]}
    assert job_id in {j["id"] for j in env["admin"].get("/api/jobs").json()["items"]}


def test_another_users_export_bundle_cannot_be_downloaded_or_deleted(env: dict[str, Any]) -> None:
    """Found: export bundles (their id shows in job results) were downloaded and deleted
    by a non-owner."""
    mallory, bob, admin = env["mallory"], env["bob"], env["admin"]
    # Diskless: the test driver cannot stream volumes, and the bundle is what counts here.
    vm = f"{PREFIX}bob-bundle"
    r = admin.post(
        "/api/hosts/local/vms", json={"name": vm, "memory_mib": 128, "owner": bob.kvmm_username}
    )
    assert r.status_code == 201, r.text
    r = bob.post(f"/api/hosts/local/vms/{vm}/export/bundle")
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    job = _wait(
        lambda: (j := bob.get(f"/api/jobs/{job_id}").json())["state"] in ("done", "failed") and j,
        "the export job",
    )
    assert job["state"] == "done", job
    bundle = job["result"]["bundle_id"]
    assert mallory.get(f"/api/exports/{bundle}").status_code == 403
    assert mallory.delete(f"/api/exports/{bundle}").status_code == 403
    r = bob.get(f"/api/exports/{bundle}")
    assert r.status_code == 200 and r.content[:2] == b"\x1f\x8b"
    # The web UI's export form names the VM in its body: the same rule.
    r = mallory.post("/transfer/export", data={"vm": f"local/{vm}"}, headers={"HX-Request": "true"})
    assert r.status_code == 403, r.text
    assert bob.delete(f"/api/exports/{bundle}").status_code == 204
