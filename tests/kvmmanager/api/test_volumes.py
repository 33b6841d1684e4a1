"""REST volumes on the test driver: CRUD, clone job, errors, roles, and an upload the
driver cannot take (no streams there), which must leave no volume behind. Real uploads
and downloads are in test_volumes_libvirtd.py."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

POOLS = "/api/hosts/local/pools"


@pytest.fixture
def pool(client: TestClient) -> Iterator[str]:
    name = f"kvmm-t-sto-{uuid.uuid4().hex[:8]}"
    r = client.post(POOLS, json={"name": name, "target": f"/kvmm-t-sto/{name}"})
    assert r.status_code == 201, r.text
    yield name
    client.delete(f"{POOLS}/{name}", params={"delete_volumes": True, "force": True})


def _vols(pool: str) -> str:
    return f"{POOLS}/{pool}/volumes"


def _wait_job(client: TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_create_list_get_delete(client: TestClient, pool: str) -> None:
    r = client.post(_vols(pool), json={"name": "a.qcow2", "capacity": "1G"})
    assert r.status_code == 201, r.text
    assert r.json()["capacity"] == 1 << 30 and r.json()["format"] == "qcow2"
    r = client.post(_vols(pool), json={"name": "b.raw", "capacity": 1 << 20, "format": "raw"})
    assert r.status_code == 201, r.text
    assert [v["name"] for v in client.get(_vols(pool)).json()] == ["a.qcow2", "b.raw"]
    got = client.get(f"{_vols(pool)}/a.qcow2").json()
    assert got["pool"] == pool and got["used_by"] == []
    assert client.delete(f"{_vols(pool)}/a.qcow2").status_code == 204
    assert client.get(f"{_vols(pool)}/a.qcow2").status_code == 404
    r = client.post(_vols(pool), json={"name": "b.raw", "capacity": 1 << 20, "format": "raw"})
    assert r.status_code == 409


def test_clone_is_a_job(client: TestClient, pool: str) -> None:
    client.post(_vols(pool), json={"name": "src.qcow2", "capacity": "1G"})
    r = client.post(f"{_vols(pool)}/src.qcow2/clone", json={"name": "dst.qcow2"})
    assert r.status_code == 202, r.text
    job = _wait_job(client, r.json()["job_id"])
    assert job["state"] == "done", job
    assert job["result"]["name"] == "dst.qcow2"
    assert client.get(f"{_vols(pool)}/dst.qcow2").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "v", "capacity": -5}, "capacity"),
        ({"name": "v", "capacity": "huge"}, "capacity"),
        ({"name": "v", "capacity": "100P"}, "capacity"),
        ({"name": "v"}, "capacity"),
        ({"name": "a/b", "capacity": "1G"}, "name"),
        ({"name": "", "capacity": "1G"}, "name"),
        ({"name": "ctl\x07", "capacity": "1G"}, "name"),
        ({"name": "v", "capacity": "1G", "format": "vmdk"}, "format"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    client: TestClient, pool: str, body: dict, field: str
) -> None:
    r = client.post(_vols(pool), json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_unknown_pool_and_volume(client: TestClient, pool: str) -> None:
    assert client.get(_vols("kvmm-t-sto-missing")).status_code == 404
    assert client.get(f"{_vols(pool)}/nope.qcow2").status_code == 404
    assert client.delete(f"{_vols(pool)}/nope.qcow2").status_code == 404
    r = client.post(f"{_vols(pool)}/nope.qcow2/resize", json={"capacity": "1G"})
    assert r.status_code == 404
    r = client.post(f"{_vols(pool)}/nope.qcow2/clone", json={"name": "x"})
    assert r.status_code == 404
    assert client.get(f"{_vols(pool)}/nope.qcow2/content").status_code == 404
    r = client.put(f"{_vols(pool)}/nope.raw/content", content=b"x" * 10)
    assert r.status_code == 404


def test_volumes_of_a_stopped_pool_are_409(client: TestClient, pool: str) -> None:
    client.post(f"{POOLS}/{pool}/actions/stop")
    r = client.get(_vols(pool))
    assert r.status_code == 409 and r.json()["error"]["field"] == "pool"


def test_upload_args_are_checked_before_any_byte(client: TestClient, pool: str) -> None:
    client.post(_vols(pool), json={"name": "have.raw", "capacity": 1024, "format": "raw"})
    url = f"{_vols(pool)}/have.raw/content"
    r = client.put(url, params={"create": True}, content=b"x" * 10)
    assert r.status_code == 409
    r = client.put(f"{_vols(pool)}/new.raw/content", params={"create": True, "format": "exe"},
                   content=b"x")  # fmt: skip
    assert r.status_code == 422 and r.json()["error"]["field"] == "format"
    r = client.put(f"{_vols(pool)}/new.raw/content", params={"create": True}, content=b"")
    assert r.status_code == 422 and r.json()["error"]["field"] == "size"


def test_failed_upload_leaves_no_new_volume(client: TestClient, pool: str) -> None:
    # The test driver has no volume streams: the upload fails after the volume was made.
    r = client.put(f"{_vols(pool)}/up.raw/content", params={"create": True}, content=b"x" * 4096)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "unsupported"
    assert client.get(f"{_vols(pool)}/up.raw").status_code == 404
    jobs = client.get("/api/jobs", params={"kind": "volume.upload"}).json()
    assert jobs["items"][0]["state"] == "failed"


def test_roles(client: TestClient, client_as: Callable[[str], TestClient], pool: str) -> None:
    client.post(_vols(pool), json={"name": "a.qcow2", "capacity": "1M"})
    viewer, operator = client_as("viewer"), client_as("operator")
    assert viewer.get(_vols(pool)).status_code == 200
    assert viewer.post(_vols(pool), json={"name": "v.qcow2", "capacity": "1M"}).status_code == 403
    assert viewer.delete(f"{_vols(pool)}/a.qcow2").status_code == 403
    assert viewer.put(f"{_vols(pool)}/a.qcow2/content", content=b"x").status_code == 403
    r = operator.post(_vols(pool), json={"name": "o.qcow2", "capacity": "1M"})
    assert r.status_code == 201
    assert operator.delete(f"{_vols(pool)}/o.qcow2").status_code == 204
