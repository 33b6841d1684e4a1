"""The agent ISO API against the real libvirtd: status, deploy job, install, eject."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from fastapi.testclient import TestClient

from kvmmanager.core.config import Settings
from kvmmanager.iso import ISO_NAME, agent_version
from kvmmanager.iso.builder import build_iso
from kvmmanager.services.iso_deploy import volume_name

pytestmark = pytest.mark.libvirtd

URI = "qemu:///system"
EPOCH = 1700000000


@pytest.fixture
def pool(dir_pool: Any) -> str:
    return dir_pool("kvmm-t-iso-").name


@pytest.fixture
def settings(
    settings: Settings, pool: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    settings.libvirt.default_uri = URI
    settings.agent.iso_pool = pool
    built = build_iso(tmp_path / ISO_NAME, source_date_epoch=EPOCH, cache_dir=tmp_path / "c")
    settings.agent.iso_path = str(built.path)
    return settings


@pytest.fixture
def api(client: TestClient) -> TestClient:
    host = client.app.state.manager.registry.get("local")
    deadline = time.monotonic() + 180
    while not host.connected:
        assert time.monotonic() < deadline, host.status_reason
        time.sleep(0.05)
    return client


@pytest.fixture
def vm(libvirtd_conn: libvirt.virConnect, libvirtd_cleanup: Any) -> Iterator[str]:
    from kvmmanager.virt.xml.domain import Domain

    name = f"kvmm-t-iso-vm-{uuid.uuid4().hex[:6]}"
    dom = Domain(type="qemu", name=name, memory=32 * 1024, current_memory=32 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch, dom.os.machine = "hvm", "x86_64", "pc"
    libvirtd_conn.defineXML(dom.to_xml())
    yield name
    libvirtd_cleanup.drop_vm(name)


def _wait_job(api: TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        job = api.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_status_deploy_install_eject(api: TestClient, pool: str, vm: str) -> None:
    r = api.get("/api/agent-iso")
    assert r.status_code == 200
    assert r.json()["source"] == "config" and r.json()["current"]

    before = api.get("/api/hosts/local/agent-iso").json()
    assert before["pool"] == pool and before["pool_exists"] and not before["deployed"]

    r = api.post("/api/hosts/local/agent-iso/deploy", json={"pool": pool})
    assert r.status_code == 202, r.text
    job = _wait_job(api, r.json()["job_id"])
    assert job["state"] == "done", job
    assert job["result"]["volume"] == volume_name(agent_version())
    assert job["kind"] == "agent_iso.deploy"

    after = api.get("/api/hosts/local/agent-iso", params={"pool": pool}).json()
    assert after["deployed"] and after["current"]

    r = api.post(f"/api/hosts/local/agent-iso/install/{vm}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["deploy"]["action"] == "unchanged"
    assert body["cdrom_added"] and body["channel"] == "added"
    assert body["guest_commands"][2] == "sh /mnt/kvmm/install.sh"

    r = api.post(f"/api/hosts/local/agent-iso/eject/{vm}")
    assert r.status_code == 200, r.text
    r = api.post(f"/api/hosts/local/agent-iso/eject/{vm}")
    assert r.status_code == 409
    assert r.json()["error"]["field"] == "vm"


def test_unknown_host_and_pool(api: TestClient) -> None:
    r = api.get("/api/hosts/nosuchhost/agent-iso")
    assert r.status_code == 404
    r = api.post("/api/hosts/nosuchhost/agent-iso/deploy", json={})
    assert r.status_code == 404
    r = api.post("/api/hosts/local/agent-iso/deploy", json={"pool": "kvmm-t-iso-none"})
    job = _wait_job(api, r.json()["job_id"])
    assert job["state"] == "failed"
    assert "kvm-manager pool create kvmm-t-iso-none" in job["error"]["message"]


def test_viewer_may_read_but_not_deploy(api: TestClient, client_as: Any) -> None:
    viewer = client_as("viewer")
    assert viewer.get("/api/hosts/local/agent-iso").status_code == 200
    assert viewer.post("/api/hosts/local/agent-iso/deploy", json={}).status_code == 403
