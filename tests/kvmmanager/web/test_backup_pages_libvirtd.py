"""The backup images of a pool policy through the backups page, against the real
libvirtd: run, listed per VM, verified (a job the page follows), restored to a new VM
(bad name beside its field), restored over the original (refused while the VM runs,
then done once it is shut off), deleted."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.kvmmanager.web.test_ops_pages import field_error, hx

from kvmmanager.core.config import Settings
from kvmmanager.virt.xml.devices import Disk
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.volume import Volume

pytestmark = [pytest.mark.libvirtd, pytest.mark.vm]
URI = "qemu:///system"
PREFIX = "kvmm-t-bkweb-"


# ---- against the real libvirtd --------------------------------------------------------


@pytest.fixture
def lab(libvirtd_lab: Any) -> dict[str, Any]:
    return libvirtd_lab(PREFIX)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.libvirt.default_uri = URI
    return settings


@pytest.fixture
def real(lab: dict[str, Any], web_as: Any) -> Iterator[TestClient]:
    c = web_as("operator")
    host = c.app.state.manager.registry.get("local")
    deadline = time.monotonic() + 60
    while not host.connected:
        assert time.monotonic() < deadline, host.status_reason
        time.sleep(0.05)
    yield c


def make_vm(lab: dict[str, Any]) -> str:
    """A 64 MiB TCG VM with one 8 MiB qcow2 v3 disk and no OS: its BIOS just runs."""
    name = f"{lab['name']}-vm"
    v = Volume(name=f"{name}.qcow2", capacity=8 << 20, target_format="qcow2")
    v.compat = "1.1"
    vol = lab["pool"].createXML(v.to_xml(), 0)
    dom = Domain(type="qemu", name=name, memory=64 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch, dom.os.machine = "hvm", "x86_64", "pc"
    disk = Disk(type="file", device="disk", driver_name="qemu", driver_type="qcow2")
    disk.source_file, disk.target_dev, disk.target_bus = vol.path(), "vda", "virtio"
    dom.devices.add(disk)
    lab["conn"].defineXML(dom.to_xml()).create()
    return name


def wait_job(c: TestClient, html: str) -> str:
    """Follow a job fragment the way the page does (it polls itself) until it ends."""
    job_id = re.search(r'id="job-([^"]+)"', html).group(1)
    deadline = time.monotonic() + 300
    while 'hx-trigger="every 1s"' in html:
        assert time.monotonic() < deadline, html
        time.sleep(0.3)
        r = c.get(f"/backup-images/jobs/{job_id}")
        assert r.status_code == 200
        html = r.text
    return html


def test_backup_images_through_the_page(real: TestClient, lab: dict[str, Any]) -> None:
    c, conn = real, lab["conn"]
    m = c.app.state.manager
    vm = make_vm(lab)
    pname = "kvmm-t-bkweb"
    form = {"name": pname, "vms": f"local/{vm}", "keep_last": "3", "timezone": "UTC",
            "quiesce": "auto", "method": "backup", "pool": lab["name"]}  # fmt: skip
    deadline = time.monotonic() + 30
    while f"local/{vm}" not in c.get("/backups").text:  # the inventory sees the new VM
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert c.post("/backups", data=form, headers=hx(c)).status_code == 204
    try:
        r = c.post(f"/backups/{pname}/run", headers=hx(c))
        assert r.status_code == 200 and "1 of 1 VMs" in r.text, r.text[:500]
        (b,) = m.backups.images.list(policy=pname)
        assert b["status"] == "ok" and b["kind"] == "full"
        page = c.get(f"/backups/{pname}/images").text
        assert f'<tr id="backup-{b["id"]}">' in page and vm in page
        base = f"/backup-images/local/{vm}/{b['id']}"

        html = wait_job(c, c.post(f"{base}/verify", headers=hx(c)).text)
        assert re.search(r"data-verify-status>ok<", html), html
        assert "sha256 and qcow2 header as recorded" in html
        row = re.search(
            rf'<tr id="backup-{b["id"]}">.*?</tr>', c.get(f"/backups/{pname}/images").text, re.S
        )
        assert "result-ok" in row.group(0) and "never" not in row.group(0)

        r = c.post(f"{base}/restore", data={"mode": "new", "name": "bad name!"}, headers=hx(c))
        assert r.status_code == 422 and r.headers["hx-retarget"] == "#backup-images"
        assert field_error(r.text, "name")
        new = f"{lab['name']}-restored"
        html = wait_job(c, c.post(f"{base}/restore", data={"mode": "new", "name": new},
                                  headers=hx(c)).text)  # fmt: skip
        assert "Restored as new VM" in html and new in html, html
        restored = conn.lookupByName(new)
        assert not restored.isActive()

        # Over the original: needs the confirmation, and a shut-off VM.
        r = c.post(f"{base}/restore", data={"mode": "original"}, headers=hx(c))
        assert r.status_code == 422 and "confirm" in field_error(r.text, "confirm")
        data = {"mode": "original", "confirm": "yes"}
        html = wait_job(c, c.post(f"{base}/restore", data=data, headers=hx(c)).text)
        assert "job-failed" in html and "is running: shut it down" in html, html
        conn.lookupByName(vm).destroy()
        html = wait_job(c, c.post(f"{base}/restore", data=data, headers=hx(c)).text)
        assert f"Restored over VM {vm}" in html, html

        r = c.post(f"{base}/delete", headers=hx(c))
        assert r.status_code == 200 and "No backups yet." in r.text
        assert m.backups.images.list(policy=pname) == []
    finally:
        c.post(f"/backups/{pname}/delete", headers=hx(c))
        for b in m.backups.images.list(policy=pname):
            m.backups.images._forget([b["id"]])
