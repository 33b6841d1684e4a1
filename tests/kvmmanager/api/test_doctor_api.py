"""GET /api/hosts/{host}/health: the doctor's report through the API, real libvirtd."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import libvirt
import pytest
from fastapi.testclient import TestClient

from kvmmanager.core.config import Settings
from kvmmanager.virt.xml.network import Network

pytestmark = pytest.mark.libvirtd


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.libvirt.default_uri = "qemu:///system"
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
def stopped_net() -> Iterator[str]:
    conn = libvirt.open("qemu:///system")
    name = f"kvmm-t-iso-net-{uuid.uuid4().hex[:6]}"
    net = conn.networkDefineXML(Network(name=name).to_xml())
    yield name
    net.undefine()
    conn.close()


def test_health_report_names_what_is_broken(api: TestClient, stopped_net: str, client_as) -> None:
    r = api.get(
        "/api/hosts/local/health", params={"network": stopped_net, "pool": "kvmm-t-iso-nopool"}
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["host"] == "local" and report["status"] == "fail"
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["libvirt"]["status"] == "ok"
    assert checks["network"]["status"] == "fail"
    assert checks["network"]["fix"] == f"kvm-manager net start {stopped_net}"
    assert checks["pool"]["status"] == "fail"
    assert checks["agent_iso"]["status"] == "fail"
    assert checks["kvm"]["status"] in ("ok", "warn")
    # Viewers may read the health of a host.
    assert client_as("viewer").get("/api/hosts/local/health").status_code == 200


def test_unknown_host_is_404(api: TestClient) -> None:
    assert api.get("/api/hosts/nosuchhost/health").status_code == 404
