"""`DELETE /vms/{vm}?remove_volumes=true` on qemu:///system (issue 17, item 3): a disk
named by pool and volume (`type='volume'`, as bundle imports define them) is deleted, not
silently orphaned; the VM's own cloud-init seed ISO goes with it while other ISOs stay."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import libvirt
import pytest
from fastapi.testclient import TestClient
from tests.kvmmanager.conftest import drop_vm
from tests.libvirtd_pools import DirPool

from kvmmanager.core.config import Settings
from kvmmanager.virt.xml.devices import Disk
from kvmmanager.virt.xml.domain import Domain

pytestmark = pytest.mark.libvirtd


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.libvirt.default_uri = "qemu:///system"
    return settings


@pytest.fixture
def api(client: TestClient) -> TestClient:
    host = client.app.state.manager.registry.get("local")
    deadline = time.monotonic() + 60
    while not host.connected:
        assert time.monotonic() < deadline, host.status_reason
        time.sleep(0.05)
    return client


@pytest.fixture
def pool(dir_pool: Callable[..., DirPool]) -> Iterator[DirPool]:
    made = dir_pool("kvmm-t-vdel-")
    yield made
    for suffix in ("-bundle", "-cloud"):
        drop_vm(made.name + suffix)


def _volume(api: TestClient, pool: str, name: str, fmt: str = "qcow2") -> dict[str, Any]:
    r = api.post(
        f"/api/hosts/local/pools/{pool}/volumes",
        json={"name": name, "capacity": "16M", "format": fmt},
    )
    assert r.status_code in (200, 201), r.text
    return r.json()


def _volumes(api: TestClient, pool: str) -> set[str]:
    r = api.get(f"/api/hosts/local/pools/{pool}/volumes")
    assert r.status_code == 200, r.text
    return {v["name"] for v in r.json()}


def test_remove_volumes_deletes_pool_volume_disks(
    api: TestClient, pool: DirPool, libvirtd_conn: libvirt.virConnect
) -> None:
    vm = f"{pool.name}-bundle"
    _volume(api, pool.name, "root.qcow2")
    pool_obj = libvirtd_conn.storagePoolLookupByName(pool.name)
    path = pool_obj.storageVolLookupByName("root.qcow2").path()
    dom = Domain(type="qemu", name=vm, memory=64 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch = "hvm", "x86_64"
    disk = Disk(type="volume", device="disk", driver_name="qemu", driver_type="qcow2")
    disk.source_pool, disk.source_volume = pool.name, "root.qcow2"
    disk.target_dev, disk.target_bus = "vda", "virtio"
    dom.devices.add(disk)
    libvirtd_conn.defineXML(dom.to_xml())

    r = api.delete(f"/api/hosts/local/vms/{vm}", params={"remove_volumes": True})
    assert r.status_code == 200, r.text
    assert r.json()["deleted_volumes"] == [path]
    assert r.json()["kept_volumes"] == []
    assert "root.qcow2" not in _volumes(api, pool.name)


def test_remove_volumes_deletes_the_vms_own_seed_but_no_other_iso(
    api: TestClient, pool: DirPool
) -> None:
    vm = f"{pool.name}-cloud"
    _volume(api, pool.name, "image.qcow2")
    body = {
        "name": vm,
        "pool": pool.name,
        "image": "image.qcow2",
        "image_pool": pool.name,
        "size_gib": 0.0625,
        "cloud_init": {"hostname": "kvmm-t-vdel", "install_agent": False},
        "start": False,
    }
    r = api.post("/api/hosts/local/vms/from-cloud-image", json=body)
    assert r.status_code in (200, 201), r.text
    made = r.json()
    assert made["seed"] == f"{vm}-seed.iso"
    assert {made["seed"], made["disk"]} <= _volumes(api, pool.name)

    r = api.delete(f"/api/hosts/local/vms/{vm}", params={"remove_volumes": True})
    assert r.status_code == 200, r.text
    gone = {p.rsplit("/", 1)[-1] for p in r.json()["deleted_volumes"]}
    assert gone == {made["disk"], made["seed"]}
    assert _volumes(api, pool.name) == {"image.qcow2"}
