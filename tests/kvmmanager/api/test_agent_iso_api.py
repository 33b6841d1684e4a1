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
from kvmmanager.services.guest.iso_deploy import volume_name

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


def _vm_with_discs(conn: libvirt.virConnect, pool: str, targets: list[str]) -> str:
    from kvmmanager.virt.xml.devices import Disk
    from kvmmanager.virt.xml.domain import Domain

    p = conn.storagePoolLookupByName(pool)
    name = f"kvmm-t-iso-vm-{uuid.uuid4().hex[:6]}"
    dom = Domain(type="qemu", name=name, memory=32 * 1024, current_memory=32 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch, dom.os.machine = "hvm", "x86_64", "pc"
    for t in targets:
        vol = f"{name}-{t}.iso"
        xml = f"<volume><name>{vol}</name><capacity>1048576</capacity></volume>"
        path = p.createXML(xml, 0).path()
        drive = Disk(type="file", device="cdrom", driver_name="qemu", driver_type="raw")
        drive.source_file, drive.target_dev, drive.target_bus = path, t, "ide"
        drive.readonly = True
        dom.devices.add(drive)
    conn.defineXML(dom.to_xml())
    return name


def _discs(conn: libvirt.virConnect, vm: str) -> dict[str, str | None]:
    from kvmmanager.virt.xml.domain import Domain

    xml = conn.lookupByName(vm).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return {d.target_dev or "": d.source_file for d in Domain.from_xml(xml).devices.cdroms()}


def test_install_never_swaps_the_vms_disc_unasked(
    api: TestClient, pool: str, libvirtd_conn: libvirt.virConnect, libvirtd_cleanup: Any
) -> None:
    """Issue 17's independent try, item 1: install-agent silently replaced the VM's only
    CD-ROM media (the install ISO)."""
    one = _vm_with_discs(libvirtd_conn, pool, ["hdc"])
    full = _vm_with_discs(libvirtd_conn, pool, ["hda", "hdb", "hdc", "hdd"])
    try:
        install_iso = _discs(libvirtd_conn, one)["hdc"]
        r = api.post(f"/api/hosts/local/agent-iso/install/{one}", json={"pool": pool})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["cdrom_added"] and body["cdrom"] != "hdc", body
        discs = _discs(libvirtd_conn, one)
        assert discs["hdc"] == install_iso and discs[body["cdrom"]] == body["iso_path"], discs
        assert body["guest_commands"][1].startswith("mount -r /dev/sr1 "), body
        assert any("kept the VM's CD-ROM media" in m for m in body["messages"]), body

        # No room for another drive: refused, naming the way to get it, nothing changed.
        before = _discs(libvirtd_conn, full)
        r = api.post(f"/api/hosts/local/agent-iso/install/{full}", json={"pool": pool})
        assert r.status_code == 409, r.text
        err = r.json()["error"]
        assert err["field"] == "replace_cd" and "replace_cd=true" in err["message"], err
        assert _discs(libvirtd_conn, full) == before
        xml = libvirtd_conn.lookupByName(full).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        assert "org.kvmmanager.agent.0" not in xml  # nothing half-made
        body = {"pool": pool, "replace_cd": True}
        r = api.post(f"/api/hosts/local/agent-iso/install/{full}", json=body)
        assert r.status_code == 200, r.text
        assert _discs(libvirtd_conn, full)["hda"] == r.json()["iso_path"]
    finally:
        libvirtd_cleanup.drop_vm(one)
        libvirtd_cleanup.drop_vm(full)
