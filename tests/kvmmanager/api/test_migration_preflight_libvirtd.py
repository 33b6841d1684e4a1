"""Migration pre-flight from qemu:///system to a test-driver host (issue 17, item 9): it
passed, then libvirt failed with "Attempt to migrate guest to the same host". The
pre-flight now compares the hypervisors (and arch, host UUIDs, the VM's CPU) first."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest
from fastapi.testclient import TestClient
from lxml import etree
from tests.kvmmanager.conftest import drop_vm
from tests.libvirtd_pools import DirPool

from kvmmanager.core.config import Settings
from kvmmanager.virt.xml.domain import Domain

pytestmark = pytest.mark.libvirtd


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.libvirt.default_uri = "qemu:///system"
    return settings


def test_preflight_refuses_another_hypervisor_with_the_reason(
    client: TestClient,
    libvirtd_conn: libvirt.virConnect,
    dir_pool: Callable[..., DirPool],
    tmp_path: Path,
) -> None:
    manager = client.app.state.manager
    deadline = time.monotonic() + 60
    while not manager.registry.get("local").connected:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    name = dir_pool("kvmm-t-migpf-").name  # a unique name, cleaned with the pool
    node = tmp_path / "node.xml"
    etree.ElementTree(etree.Element("node")).write(str(node))
    r = client.post("/api/hosts", json={"name": "kvmm-t-migpf-test", "uri": f"test://{node}"})
    assert r.status_code in (200, 201), r.text
    dom = Domain(type="qemu", name=name, memory=64 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch, dom.os.machine = "hvm", "x86_64", "pc"
    try:
        libvirtd_conn.defineXML(dom.to_xml()).create()
        r = client.post(
            f"/api/hosts/local/vms/{name}/migration/check", json={"target": "kvmm-t-migpf-test"}
        )
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["field"] == "target"
        assert "runs TEST" in err["message"] and "same hypervisor" in err["message"]
    finally:
        drop_vm(name)
