"""An operator must not boot a guest from a host file (issue 14).

`install.kind=kernel` took any host path as kernel/initrd: QEMU read it as root (libvirt
even relabelled a root-only file for the guest while it ran), so any host file could be
loaded into a guest the operator controls. Now an operator's kernel and initrd must be
volumes of a storage pool; an admin may still name a host path. On the test driver: no
real host file is needed to see what the manager accepts and defines.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from tests.testdriver_cleanup import purge

PREFIX = "kvmm-t-sechost-boot-"
HOST_FILE = "/etc/shadow"


@pytest.fixture
def admin(client: TestClient) -> Iterator[TestClient]:
    host = client.app.state.manager.registry.get("local")  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while not host.connected:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        yield client
    finally:
        purge(PREFIX)


@pytest.fixture
def operator(admin: TestClient, role_client: Callable[[str], TestClient]) -> TestClient:
    return role_client("operator")


def _vm(kernel: str, initrd: str | None = None) -> dict:
    install = {"kind": "kernel", "kernel": kernel, "initrd": initrd, "cmdline": "console=ttyS0"}
    return {"name": f"{PREFIX}{uuid.uuid4().hex[:8]}", "memory_mib": 64, "install": install}


def _kernel_xml(admin: TestClient, name: str) -> str:
    return admin.get(f"/api/hosts/local/vms/{name}/xml").text


@pytest.mark.parametrize("which", ["kernel", "initrd"])
def test_operator_kernel_or_initrd_from_a_host_path_is_refused(
    admin: TestClient, operator: TestClient, which: str
) -> None:
    vol = admin.post(
        "/api/hosts/local/pools/default-pool/volumes",
        json={"name": f"{PREFIX}{uuid.uuid4().hex[:6]}", "capacity": 1 << 20, "format": "raw"},
    )
    assert vol.status_code == 201, vol.text
    in_pool = vol.json()["path"]
    body = _vm(HOST_FILE, in_pool) if which == "kernel" else _vm(in_pool, HOST_FILE)
    r = operator.post("/api/hosts/local/vms", json=body)
    defined = r.status_code == 201 and HOST_FILE in _kernel_xml(admin, body["name"])
    assert not defined, f"the VM boots {HOST_FILE} as its {which}"
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == f"install.{which}" and "storage pool" in err["message"], err
    assert body["name"] not in {v["name"] for v in admin.get("/api/vms").json()["vms"]}


def test_operator_kernel_from_pool_volumes_and_admin_from_a_host_path_are_accepted(
    admin: TestClient, operator: TestClient
) -> None:
    paths = []
    for part in ("vmlinuz", "initrd"):
        vol = admin.post(
            "/api/hosts/local/pools/default-pool/volumes",
            json={"name": f"{PREFIX}{part}-{uuid.uuid4().hex[:6]}", "capacity": 1 << 20},
        )
        assert vol.status_code == 201, vol.text
        paths.append(vol.json()["path"])
    body = _vm(*paths)
    r = operator.post("/api/hosts/local/vms", json=body)
    assert r.status_code == 201, r.text
    assert f"<kernel>{paths[0]}</kernel>" in _kernel_xml(admin, body["name"])
    body = _vm("/boot/vmlinuz-for-the-admin")
    r = admin.post("/api/hosts/local/vms", json=body)
    assert r.status_code == 201, r.text


def test_operator_cloud_image_boot_kernel_from_a_host_path_is_refused(
    operator: TestClient,
) -> None:
    body = {
        "name": f"{PREFIX}{uuid.uuid4().hex[:8]}",
        "pool": "default-pool",
        "image": "no-such-image.qcow2",
        "size_gib": 1,
        "cloud_init": {"hostname": "x"},
        "boot": {"kernel": HOST_FILE},
    }
    r = operator.post("/api/hosts/local/vms/from-cloud-image", json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == "kernel" and "storage pool" in err["message"], err
