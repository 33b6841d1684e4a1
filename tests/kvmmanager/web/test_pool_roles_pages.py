"""Pool start/stop on the web pages by role (issue 15): only admins get Start/Stop (as for
creating a pool), an operator's post is refused anyway, and the admin's Stop confirm names
the running VMs whose disks are in the pool."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import libvirt
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kvmmanager.virt.xml.devices import Disk
from kvmmanager.virt.xml.domain import Domain


def test_pool_start_stop_is_for_admins_and_names_running_users(
    web_as: Callable[[str], TestClient], web_app: FastAPI
) -> None:
    admin, operator = web_as("admin"), web_as("operator")
    pool, vm = f"kvmm-t-prole-{uuid.uuid4().hex[:6]}", f"kvmm-t-prole-vm-{uuid.uuid4().hex[:6]}"
    target = f"/kvmm-t-sto/{pool}"
    csrf = {"X-CSRF-Token": admin.csrf}
    r = admin.post("/storage/local/pools", data={"name": pool, "target": target}, headers=csrf)
    assert r.is_success, r.text
    hc = web_app.state.manager.registry.get("local")

    def define(conn: libvirt.virConnect) -> None:
        dom = Domain(type="test", name=vm, memory=65536, current_memory=65536, vcpus=1)
        dom.os.os_type = "hvm"
        disk = Disk(type="file", device="disk", source_file=f"{target}/{vm}.qcow2")
        disk.target_dev, disk.target_bus = "vda", "virtio"
        dom.devices.add(disk)
        conn.defineXML(dom.to_xml()).create()

    define(hc.conn)  # libvirt connections are thread-safe; the test driver has one state
    stop = f"/storage/local/{pool}/actions/stop"
    # The operator sees Refresh but no Stop/Start, and a hand-made post is refused.
    page = operator.get("/storage").text
    assert f"/storage/local/{pool}/actions/refresh" in page and stop not in page
    r = operator.post(stop, headers={"X-CSRF-Token": operator.csrf})
    assert r.status_code == 403 and "admin" in r.text
    # The admin's confirm names the running VM (once the inventory has it).
    deadline = time.monotonic() + 30
    while True:
        page = admin.get("/storage").text
        if f"lose their disks: {vm}." in page:
            break
        assert time.monotonic() < deadline, "the Stop confirm never named the running VM"
        time.sleep(0.1)
    assert stop in page
    assert admin.post(stop, headers=csrf).status_code == 204
