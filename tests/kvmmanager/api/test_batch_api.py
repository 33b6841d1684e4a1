"""POST /api/batch/{action} on the test driver (sync and as a job), its audit entry,
roles, and `kvm-manager batch` against a live server."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest
from fastapi.testclient import TestClient

PREFIX = "kvmm-t-ops-"


def _cleanup() -> None:
    c = libvirt.open("test:///default")
    try:
        for dom in c.listAllDomains():
            if dom.name().startswith(PREFIX):
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefine()
    finally:
        c.close()


def _wait(cond: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def vms(client: TestClient) -> Iterator[list[str]]:
    """Two shut-off VMs tagged `kvmm-t-ops-b` on the connected `local` test host."""
    host = client.app.state.manager.registry.get("local")
    _wait(lambda: host.connected, "the local host to connect")
    names = [f"{PREFIX}{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for n in names:
        r = client.post(
            "/api/hosts/local/vms", json={"name": n, "memory_mib": 64, "tags": ["kvmm-t-ops-b"]}
        )
        assert r.status_code == 201, r.text
    yield names
    _cleanup()


def test_batch_by_tag_and_list_reports_each_vm(client, vms):
    r = client.post("/api/batch/start", json={"tag": "kvmm-t-ops-b"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["total"], body["succeeded"], body["failed"]) == (2, 2, 0)

    # Starting again fails for both, plus an unknown VM: still a 200 with three results.
    r = client.post(
        "/api/batch/start",
        json={"vms": [{"host": "local", "vm": n} for n in [*vms, "kvmm-t-ops-none"]]},
    )
    assert r.status_code == 200
    codes = sorted(i["error"]["code"] for i in r.json()["results"])
    assert codes == ["conflict", "conflict", "not_found"]

    entries = client.get("/api/audit", params={"action": "batch.run"}).json()
    items = entries["items"] if isinstance(entries, dict) else entries
    # Each batch is audited with what it acted on: the tag, or the VMs it named.
    targets = sorted(e["target"] for e in items)
    named = ", ".join(f"local/{n}" for n in [*vms, "kvmm-t-ops-none"])
    assert targets == sorted([named, "tag:kvmm-t-ops-b"]), targets


def test_batch_as_a_job(client, vms):
    r = client.post(
        "/api/batch/destroy?background=true",
        json={"vms": [{"host": "local", "vm": vms[0]}], "concurrency": 1},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    job = _wait(
        lambda: (
            (j := client.get(f"/api/jobs/{job_id}").json())["state"] in ("done", "failed") and j
        ),
        "the batch job",
    )
    assert job["state"] == "done", job
    assert job["result"]["failed"] == 1
    assert "is not running" in job["result"]["results"][0]["message"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/batch/start", {"tag": "x", "concurrency": 99}, "concurrency"),
        ("/api/batch/start", {}, "vms"),
        ("/api/batch/start?background=true", {"tag": "Bad Tag"}, "tag"),
    ],
)
def test_bad_input_is_422_naming_the_field(client, path, body, field):
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_unknown_action_is_422(client):
    r = client.post("/api/batch/explode", json={"tag": "x"})
    assert r.status_code == 422


def test_viewer_cannot_run_a_batch(client_as):
    r = client_as("viewer").post("/api/batch/start", json={"tag": "x"})
    assert r.status_code == 403


def test_batch_refuses_vms_owned_by_someone_else(client, client_as):
    """The per-VM ownership rule holds through a batch: an operator's batch acts on
    their own VM and reports another user's VM as refused, untouched."""
    op = client_as("operator")
    me = op.get("/api/auth/me").json()["username"]
    theirs, mine = (f"{PREFIX}{uuid.uuid4().hex[:8]}" for _ in range(2))
    try:
        for name, owner in ((theirs, "admin"), (mine, me)):
            r = client.post(
                "/api/hosts/local/vms", json={"name": name, "memory_mib": 64, "owner": owner}
            )
            assert r.status_code == 201, r.text
        request = {"vms": [{"host": "local", "vm": n} for n in (theirs, mine)]}
        for path in ("/api/batch/start", "/api/batch/start?background=true"):
            r = op.post(path, json=request)
            assert r.status_code in (200, 202), r.text
            body = r.json() if r.status_code == 200 else _job_result(client, r.json()["job_id"])
            by_vm = {x["vm"]: x for x in body["results"]}
            assert by_vm[theirs]["ok"] is False, by_vm
            assert by_vm[theirs]["error"]["code"] == "forbidden"
            assert "belongs to 'admin'" in by_vm[theirs]["message"]
            assert by_vm[mine]["ok"] is True, by_vm
            assert client.get(f"/api/hosts/local/vms/{theirs}").json()["state"] == "shutoff"
            client.post(f"/api/hosts/local/vms/{mine}/actions/destroy")
    finally:
        _cleanup()


def _job_result(client: TestClient, job_id: str) -> dict[str, Any]:
    def done() -> Any:
        job = client.get(f"/api/jobs/{job_id}").json()
        return job if job["state"] != "running" else None

    return _wait(done, "the batch job")["result"]


def test_cli_batch(cli, live_server):
    host = live_server.manager.registry.get("local")
    _wait(lambda: host.connected, "the local host to connect")
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    try:
        r = cli("vm", "create", name, "--memory", "64")
        assert r.exit_code == 0, r.stderr
        r = cli("--json", "batch", "start", name, "local/kvmm-t-ops-none")
        assert r.exit_code == 3, r.stderr
        body = json.loads(r.stdout)
        assert (body["succeeded"], body["failed"]) == (1, 1)
        r = cli("batch", "destroy", name)
        assert r.exit_code == 0, r.stderr
        assert "destroy: 1 of 1 succeeded, 0 failed" in r.stderr
        r = cli("batch", "explode", name)
        assert r.exit_code == 2
    finally:
        _cleanup()


def test_cli_batch_tag_matching_no_vm_is_an_error(cli, live_server):
    # Issue 17's try: a tag no VM has printed "0 of 0 succeeded" and exited 0.
    host = live_server.manager.registry.get("local")
    _wait(lambda: host.connected, "the local host to connect")
    r = cli("batch", "start", "--tag", "kvmm-t-ops-no-such-tag")
    assert r.exit_code == 4, (r.stdout, r.stderr)
    assert "--tag 'kvmm-t-ops-no-such-tag' matched no VM" in r.stderr
    assert "Traceback" not in r.stderr and "succeeded" not in r.stderr
