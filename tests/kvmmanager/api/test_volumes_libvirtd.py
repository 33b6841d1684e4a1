"""Streaming upload/download over real HTTP (uvicorn) into the real libvirtd: the body
goes through libvirt's volume stream as it arrives; a cancelled upload (job cancel from a
second client) leaves no volume."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import libvirt
import pytest

from kvmmanager.core.config import Settings

pytestmark = pytest.mark.libvirtd

MIB = 1 << 20


def _drop_pool(name: str) -> None:
    """Remove the pool and its volumes over a fresh connection (whatever happened to the
    server's own connection during the test)."""
    conn = libvirt.open("qemu:///system")
    try:
        pool = conn.storagePoolLookupByName(name)
        if pool.isActive():
            for vol in pool.listAllVolumes(0):
                vol.delete(0)
            pool.destroy()
        pool.undefine()
    except libvirt.libvirtError:
        pass
    finally:
        conn.close()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.libvirt.default_uri = "qemu:///system"
    return settings


@pytest.fixture
def http(live_server: Any) -> Iterator[httpx.Client]:
    # The server connects to libvirtd in the background after it started listening.
    host = live_server.manager.registry.get("local")
    deadline = time.monotonic() + 60
    while not host.connected:
        assert time.monotonic() < deadline, host.status_reason
        time.sleep(0.05)
    headers = {"Authorization": f"Bearer {live_server.token}"}
    with httpx.Client(base_url=live_server.url, headers=headers, timeout=120) as c:
        yield c


@pytest.fixture
def pool(http: httpx.Client) -> Iterator[str]:
    workdir = Path(tempfile.mkdtemp(prefix="kvmm-t-sto-", dir="/var/tmp"))
    name = f"kvmm-t-sto-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "target": str(workdir / "pool"), "autostart": False}
    try:
        r = http.post("/api/hosts/local/pools", json=body)
        assert r.status_code == 201, r.text
        yield name
    finally:
        http.delete(
            f"/api/hosts/local/pools/{name}", params={"delete_volumes": True, "force": True}
        )
        _drop_pool(name)
        shutil.rmtree(workdir, ignore_errors=True)


def test_upload_then_download_over_http(http: httpx.Client, pool: str) -> None:
    data = os.urandom(4 * MIB + 777)
    chunks = [data[i : i + 256 * 1024] for i in range(0, len(data), 256 * 1024)]
    url = f"/api/hosts/local/pools/{pool}/volumes/up.img/content"
    r = http.put(url, params={"create": True, "format": "raw"}, content=iter(chunks),
                 headers={"Content-Length": str(len(data))})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["volume"]["capacity"] == len(data)
    job = http.get(f"/api/jobs/{r.json()['job_id']}").json()
    assert job["state"] == "done" and job["done"] == len(data)

    digest = hashlib.sha256()
    with http.stream("GET", url) as resp:
        assert resp.status_code == 200
        assert int(resp.headers["content-length"]) == len(data)
        for chunk in resp.iter_bytes():
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_chunked_upload_with_size_and_overwrite(http: httpx.Client, pool: str) -> None:
    url = f"/api/hosts/local/pools/{pool}/volumes/c.img/content"
    first = os.urandom(MIB)
    # A generator body without Content-Length goes out chunked: ?size= declares it.
    r = http.put(url, params={"create": True, "size": MIB}, content=iter([first]))
    assert r.status_code == 200, r.text
    second = os.urandom(MIB)
    r = http.put(url, content=second)
    assert r.status_code == 200, r.text
    assert http.get(url).content == second


def test_cancelled_upload_leaves_no_volume(http: httpx.Client, live_server: Any, pool: str) -> None:
    url = f"/api/hosts/local/pools/{pool}/volumes/cancel.img/content"
    headers = {"Authorization": f"Bearer {live_server.token}"}
    cancelled: list[str] = []

    def body() -> Iterator[bytes]:
        with httpx.Client(base_url=live_server.url, headers=headers, timeout=60) as other:
            for i in range(64):
                yield os.urandom(256 * 1024)
                if i >= 4 and not cancelled:
                    # The job row exists before the server reads the body (the job reads it).
                    jobs = other.get("/api/jobs", params={"kind": "volume.upload"}).json()
                    mine = [j for j in jobs["items"] if j["target"].endswith("/cancel.img")]
                    if mine and mine[0]["state"] in ("queued", "running"):
                        r = other.post(f"/api/jobs/{mine[0]['id']}/cancel")
                        assert r.status_code == 200, r.text
                        cancelled.append(mine[0]["id"])

    try:
        r = http.put(url, params={"create": True}, content=body(),
                     headers={"Content-Length": str(64 * 256 * 1024)})  # fmt: skip
        assert r.status_code == 409 and r.json()["error"]["code"] == "cancelled", r.text
    except httpx.TransportError:
        # The server may answer and close while the client is still sending.
        pass
    assert cancelled
    job = http.get(f"/api/jobs/{cancelled[0]}").json()
    assert job["state"] == "cancelled"
    assert http.get(f"/api/hosts/local/pools/{pool}/volumes/cancel.img").status_code == 404
