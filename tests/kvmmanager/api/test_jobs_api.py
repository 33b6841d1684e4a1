"""Jobs over the API, and the audit entry of the request that started one."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, Depends, status
from fastapi.testclient import TestClient

from kvmmanager.api.app import create_app
from kvmmanager.api.deps import current_user, get_manager
from kvmmanager.core.config import Settings

DEADLINE = 60
gate = threading.Event()

probe = APIRouter(prefix="/api/kvmm-t-plat")


@probe.post("/jobs/{name}", name="probe.start_job", status_code=status.HTTP_202_ACCEPTED)
def start_job(
    name: str, body: dict[str, Any], user=Depends(current_user), manager=Depends(get_manager)
) -> dict[str, str]:
    def work(progress: Any) -> dict[str, str]:
        progress(1, 2, "waiting")
        gate.wait(DEADLINE)
        progress(2, 2, "done")
        return {"name": name}

    return {"job_id": manager.jobs.start("kvmm-t-plat.probe", name, work, user)}


@pytest.fixture
def jclient(settings: Settings) -> Iterator[TestClient]:
    gate.clear()
    app = create_app(settings)
    app.include_router(probe)
    with TestClient(app) as c:
        _, secret = app.state.manager.users.create_token("admin", "kvmm-t-plat-jobs")
        c.headers["Authorization"] = f"Bearer {secret}"
        yield c
    gate.set()


def wait_state(c: TestClient, job_id: str, *states: str) -> dict:
    deadline = time.monotonic() + DEADLINE
    while True:
        job = c.get(f"/api/jobs/{job_id}").json()
        if job["state"] in states or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


def test_job_runs_and_is_audited_with_its_id(jclient: TestClient) -> None:
    r = jclient.post("/api/kvmm-t-plat/jobs/one", json={"api_key": "k", "size": 1})
    assert r.status_code == 202
    job_id = r.json()["job_id"]
    audit = jclient.get("/api/audit", params={"job_id": job_id}).json()["items"]
    assert [(a["action"], a["target"], a["status"]) for a in audit] == [
        ("probe.start_job", "one", 202)
    ]
    assert audit[0]["params"] == {"api_key": "***", "size": 1}
    gate.set()
    job = wait_state(jclient, job_id, "done", "failed")
    assert job["state"] == "done" and job["result"] == {"name": "one"}
    assert (job["done"], job["total"]) == (2, 2)
    listed = jclient.get("/api/jobs", params={"state": "done"}).json()
    assert job_id in {j["id"] for j in listed["items"]}
    # Only one audit entry for that request, not a second one at the end.
    assert jclient.get("/api/audit", params={"action": "probe.start_job"}).json()["total"] == 1


def test_cancel_over_api(jclient: TestClient) -> None:
    job_id = jclient.post("/api/kvmm-t-plat/jobs/two", json={}).json()["job_id"]
    wait_state(jclient, job_id, "running")
    r = jclient.post(f"/api/jobs/{job_id}/cancel")
    assert r.status_code == 200
    gate.set()
    job = wait_state(jclient, job_id, "cancelled", "done", "failed")
    assert job["state"] == "cancelled"
    r = jclient.post(f"/api/jobs/{job_id}/cancel")
    assert r.status_code == 409
    assert jclient.get("/api/jobs/kvmm-t-plat-none").status_code == 404
    r = jclient.get("/api/jobs", params={"state": "sleeping"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "state"


def test_viewers_see_only_their_own_jobs(jclient: TestClient) -> None:
    job_id = jclient.post("/api/kvmm-t-plat/jobs/three", json={}).json()["job_id"]
    m = jclient.app.state.manager
    m.users.create("kvmm-t-plat-jv", "long-enough", "viewer")
    _, secret = m.users.create_token("kvmm-t-plat-jv", "t")
    viewer = TestClient(jclient.app, headers={"Authorization": f"Bearer {secret}"})
    assert viewer.get("/api/jobs").json()["total"] == 0
    assert viewer.get(f"/api/jobs/{job_id}").status_code == 404
    assert viewer.post(f"/api/jobs/{job_id}/cancel").status_code == 403
    assert jclient.get(f"/api/jobs/{job_id}").status_code == 200
    gate.set()
