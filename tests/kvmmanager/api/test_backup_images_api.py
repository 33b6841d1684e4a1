"""REST routes of backups made with libvirt's backup API, against the real libvirtd:
a policy with method 'backup', a backup taken, listed, verified, restored to a new VM, and
every bad input answered with a 4xx that names the problem."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from kvmmanager.core.config import Settings
from kvmmanager.virt.xml.devices import Disk
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.volume import Volume

pytestmark = pytest.mark.libvirtd
URI = "qemu:///system"
PREFIX = "kvmm-t-bkapi-"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.libvirt.default_uri = URI
    return settings


@pytest.fixture
def lab(libvirtd_lab: Any) -> dict[str, Any]:
    return libvirtd_lab(PREFIX)


def make_vm(lab: dict[str, Any], fmt: str) -> str:
    name = f"{lab['name']}-{fmt}"
    v = Volume(name=f"{name}.{fmt}", capacity=8 << 20, target_format=fmt)
    if fmt == "qcow2":
        v.compat = "1.1"
    vol = lab["pool"].createXML(v.to_xml(), 0)
    dom = Domain(type="qemu", name=name, memory=64 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch, dom.os.machine = "hvm", "x86_64", "pc"
    disk = Disk(type="file", device="disk", driver_name="qemu", driver_type=fmt)
    disk.source_file, disk.target_dev, disk.target_bus = vol.path(), "vda", "virtio"
    dom.devices.add(disk)
    lab["conn"].defineXML(dom.to_xml()).create()
    return name


def wait_connected(client: Any) -> None:
    host = client.app.state.manager.registry.get("local")
    deadline = time.monotonic() + 60
    while not host.connected:
        assert time.monotonic() < deadline, host.status_reason
        time.sleep(0.05)


def test_backup_routes(client: Any, lab: dict[str, Any]) -> None:
    wait_connected(client)
    vm, raw_vm = make_vm(lab, "qcow2"), make_vm(lab, "raw")
    # A policy that makes snapshots cannot take backups into a pool.
    pol = {"name": f"s{uuid.uuid4().hex[:6]}", "vms": [{"host": "local", "vm": vm}]}
    assert client.post("/api/backup-policies", json=pol).status_code == 201
    r = client.post(f"/api/hosts/local/vms/{vm}/backups", json={"policy": pol["name"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "policy"
    # A backup policy needs its pool.
    bad = {**pol, "name": "b" + pol["name"], "method": "backup"}
    r = client.post("/api/backup-policies", json=bad)
    assert r.status_code == 422 and r.json()["error"]["field"] == "pool"
    good = {**bad, "pool": lab["name"], "keep_last": 3}
    r = client.post("/api/backup-policies", json=good)
    assert r.status_code == 201 and r.json()["method"] == "backup"

    r = client.post(f"/api/hosts/local/vms/{vm}/backups", json={"policy": good["name"]})
    assert r.status_code == 201, r.text
    b = r.json()
    assert b["kind"] == "full" and b["status"] == "ok" and b["volumes"][0]["disk"] == "vda"
    listed = client.get(f"/api/hosts/local/vms/{vm}/backups").json()
    assert [x["id"] for x in listed] == [b["id"]]
    assert client.get("/api/backups", params={"policy": good["name"]}).json()[0]["id"] == b["id"]
    one = f"/api/hosts/local/vms/{vm}/backups/{b['id']}"
    assert client.get(one).json()["checkpoint"] == b["checkpoint"]
    v = client.post(one + "/verify").json()
    assert v["status"] == "ok" and v["volumes"][0]["sha256"] == b["volumes"][0]["sha256"]

    r = client.post(one + "/restore", json={"mode": "new", "name": f"{vm}-copy"})
    assert r.status_code == 200, r.text
    assert lab["conn"].lookupByName(f"{vm}-copy").UUIDString() == r.json()["uuid"]

    # Bad input, each a 4xx naming the field.
    cases = [
        (f"/api/hosts/local/vms/{lab['name']}-nope/backups", {"policy": good["name"]}, 404, "vm"),
        (f"/api/hosts/local/vms/{raw_vm}/backups", {"policy": good["name"],
                                                    "kind": "incremental"}, 422, "kind"),
        (one + "/restore", {"mode": "new", "name": f"{vm}-copy"}, 409, "name"),
        (one + "/restore", {"mode": "new"}, 422, "name"),
        (one + "/restore", {"mode": "original"}, 422, "confirm"),
        (one + "/restore", {"mode": "original", "confirm": True}, 409, "vm"),  # running
        (f"/api/hosts/local/vms/{raw_vm}/backups/{b['id']}/verify", None, 404, "backup"),
    ]  # fmt: skip
    for url, body, code, field in cases:
        r = client.post(url, json=body)
        assert r.status_code == code, (url, body, r.text)
        assert r.json()["error"]["field"] == field, (url, r.text)
    r = client.post(f"/api/hosts/local/vms/{vm}/backups", json={"policy": "nope"})
    assert r.status_code == 404

    assert client.delete(one).status_code == 200
    assert client.get(one).status_code == 404


def test_cli_backup_images(cli: Any, live_server: Any, lab: dict[str, Any]) -> None:
    import json

    host = live_server.manager.registry.get("local")
    deadline = time.monotonic() + 60
    while not host.connected:
        assert time.monotonic() < deadline, host.status_reason
        time.sleep(0.05)
    vm = make_vm(lab, "qcow2")
    pol = f"c{uuid.uuid4().hex[:6]}"
    r = cli("backup", "add", pol, vm, "--method", "backup", "--pool", lab["name"],
            "--full-every", "2")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    r = cli("--json", "backup", "take", pol, vm)
    assert r.exit_code == 0, r.stderr
    full = json.loads(r.stdout)
    r = cli("--json", "backup", "run", pol)
    assert r.exit_code == 0, r.stdout + r.stderr
    res = json.loads(r.stdout)["results"][0]
    assert res["kind"] == "incremental" and res["ok"], res
    r = cli("--json", "backup", "images", vm)
    assert [b["kind"] for b in json.loads(r.stdout)] == ["incremental", "full"]
    r = cli("--json", "backup", "verify", vm, str(res["backup"]))
    assert r.exit_code == 0 and json.loads(r.stdout)["status"] == "ok", r.stdout + r.stderr
    r = cli("--json", "backup", "restore-image", vm, str(res["backup"]), "--name", f"{vm}-c")
    assert r.exit_code == 0, r.stderr
    r = cli("backup", "restore-image", vm, str(full["id"]), "--over", input="n\n")
    assert r.exit_code == 2 and "confirm" in r.stderr
    r = cli("backup", "delete-image", vm, str(full["id"]))
    assert r.exit_code == 5 and "base of incremental" in r.stderr
    for bid in (res["backup"], full["id"]):
        assert cli("backup", "delete-image", vm, str(bid)).exit_code == 0
