"""`DELETE /vms/{vm}/nics/{mac}` of a user-mode (slirp) NIC on qemu:///system (issue 17's
independent try, item 7): the answer is in the interface's words, never libvirt's raw
"device not found: no device found at address ..."."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from tests.kvmmanager.conftest import drop_vm

from kvmmanager.core.config import Settings

pytestmark = pytest.mark.libvirtd


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.libvirt.default_uri = "qemu:///system"
    return settings


@pytest.fixture
def vm(client: TestClient) -> Iterator[str]:
    host = client.app.state.manager.registry.get("local")
    deadline = time.monotonic() + 60
    while not host.connected:
        assert time.monotonic() < deadline, host.status_reason
        time.sleep(0.05)
    name = f"kvmm-t-nicdet-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "memory_mib": 64, "nics": [{"user": True}], "start": True}
    r = client.post("/api/hosts/local/vms", json=body)
    try:
        assert r.status_code in (200, 201), r.text
        yield name
    finally:
        drop_vm(name)


def test_detaching_a_user_nic_twice_answers_in_the_apis_words(client: TestClient, vm: str) -> None:
    r = client.get(f"/api/hosts/local/vms/{vm}")
    assert r.status_code == 200, r.text
    [nic] = r.json()["nics"]
    mac = nic["mac"]
    url = f"/api/hosts/local/vms/{vm}/nics/{mac}"

    # No OS runs in the guest: it never releases the NIC, libvirt still says "done".
    first = client.delete(url)
    assert first.status_code == 200, first.text
    out = first.json()
    assert (out["applied_live"], out["next_boot"]) == (False, True), out
    assert "user-mode (slirp)" in out["message"] and "not released it yet" in out["message"]

    again = client.delete(url)
    assert again.status_code in (200, 409), again.text
    text = again.text
    assert "no device found at address" not in text and "device not found" not in text, text
    assert mac in text and "user-mode (slirp)" in text, text
