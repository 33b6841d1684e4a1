"""POST /api/hosts/{host}/vms/from-cloud-image on the test driver: every refusal comes
before anything is made (4xx naming the field) and leaves the pool as it was. The
successful path needs volume uploads (real libvirtd): test_cloudinit_libvirtd.py."""

from __future__ import annotations

import base64
import os
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest
from fastapi.testclient import TestClient

from kvmmanager.services.storage.xml import build_volume_xml

POOL = "default-pool"
PREFIX = "kvmm-t-ci-"
URL = "/api/hosts/local/vms/from-cloud-image"


def ssh_key(kind: bytes = b"ssh-ed25519", label: str = "ssh-ed25519") -> str:
    blob = b"".join(struct.pack(">I", len(p)) + p for p in (kind, os.urandom(32)))
    return f"{label} {base64.b64encode(blob).decode()} alice@laptop"


@pytest.fixture
def image(client: TestClient) -> Iterator[str]:
    host = client.app.state.manager.registry.get("local")
    deadline = time.monotonic() + 30
    while not host.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    conn = libvirt.open("test:///default")
    pool = conn.storagePoolLookupByName(POOL)
    pool.createXML(
        build_volume_xml(f"{name}.qcow2", 2 << 30, "qcow2"),
        0,
    )
    try:
        yield f"{name}.qcow2"
    finally:
        for dom in conn.listAllDomains():
            if dom.name().startswith(PREFIX):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        for vol in pool.listAllVolumes():
            if vol.name().startswith(PREFIX):
                vol.delete(0)
        conn.close()


def body(img: str, **kw: Any) -> dict[str, Any]:
    ci = {"hostname": "web1", "users": [{"name": "alice", "ssh_authorized_keys": [ssh_key()]}]}
    return {"name": f"{PREFIX}vm", "pool": POOL, "image": img, "size_gib": 4,
            "cloud_init": ci, **kw}  # fmt: skip


def volumes() -> list[str]:
    conn = libvirt.open("test:///default")
    try:
        return sorted(conn.storagePoolLookupByName(POOL).listVolumes())
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"size_gib": 1}, 422, "size_gib"),
        ({"size_gib": -1}, 422, "size_gib"),
        ({"image": "kvmm-t-ci-no-such.qcow2"}, 404, "image"),
        ({"image_pool": "kvmm-t-ci-no-pool"}, 404, "image_pool"),
        ({"pool": "kvmm-t-ci-no-pool"}, 404, "pool"),
        ({"name": "bad/name"}, 422, "name"),
        ({"cloud_init": {"hostname": "bad_host!"}}, 422, "hostname"),
        ({"cloud_init": {"hostname": "h", "users": [{"name": "a", "ssh_authorized_keys": ["hi"]}]}},
         422, "users[0].ssh_authorized_keys"),
        # The key's data must be what its type says (a pasted key with a wrong label).
        ({"cloud_init": {"hostname": "h", "users": [
            {"name": "a", "ssh_authorized_keys": [ssh_key(b"ssh-rsa", "ssh-ed25519")]}]}},
         422, "users[0].ssh_authorized_keys"),
        ({"cloud_init": {"hostname": "h", "users": [
            {"name": "a", "ssh_authorized_keys": ["ssh-ed25519 !!!notbase64"]}]}},
         422, "users[0].ssh_authorized_keys"),
        ({"cloud_init": {"hostname": "h", "users": [
            {"name": "a", "password": "x", "passwd_hash": "$6$a$b"}]}}, 422, "users[0].password"),
        ({"cloud_init": {"hostname": "h", "users": [{"name": "a", "password": ""}]}},
         422, "users[0].password"),
        ({"boot": {"kernel": "/k", "cmdline": "a\nb"}}, 422, "cmdline"),
        # The agent's policy: its own keys, checked before anything is made.
        ({"cloud_init": {"hostname": "h", "agent_policy": {"allowed_read_paths": ["etc"]}}},
         422, "agent_policy.allowed_read_paths"),
        ({"cloud_init": {"hostname": "h", "agent_policy": {"disabled_methods": ["nope"]}}},
         422, "agent_policy.disabled_methods"),
        ({"cloud_init": {"hostname": "h", "agent_policy": {"read_paths": ["/etc"]}}},
         422, "cloud_init.agent_policy.read_paths"),
    ],
)  # fmt: skip
def test_refusals_name_the_field_and_make_nothing(
    client: TestClient, image: str, change: dict[str, Any], status: int, field: str
) -> None:
    before = volumes()
    r = client.post(URL, json=body(image, **change))
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field
    assert volumes() == before


def test_name_clash_and_viewer(client: TestClient, client_as: Any, image: str) -> None:
    name = f"{PREFIX}{uuid.uuid4().hex[:6]}"
    r = client.post("/api/hosts/local/vms", json={"name": name, "memory_mib": 128})
    assert r.status_code == 201, r.text
    before = volumes()
    r = client.post(URL, json=body(image, name=name))
    assert r.status_code == 409 and r.json()["error"]["field"] == "name"
    assert volumes() == before
    r = client_as("viewer").post(URL, json=body(image, name=f"{name}-v"))
    assert r.status_code == 403


def test_an_image_a_vm_holds_or_an_iso_is_refused_naming_the_image(
    client: TestClient, image: str
) -> None:
    """A VM's disk is no image (an overlay on a disk a guest writes would be torn) and an
    ISO is a CD's medium: refused as the web pickers show them, before anything is made."""
    holder = f"{PREFIX}{uuid.uuid4().hex[:6]}"
    disks = [{"pool": POOL, "volume": image}]
    r = client.post("/api/hosts/local/vms", json={"name": holder, "memory_mib": 64, "disks": disks})
    assert r.status_code == 201, r.text
    iso = f"{PREFIX}{uuid.uuid4().hex[:6]}.iso"
    r = client.post(f"/api/hosts/local/pools/{POOL}/volumes", json={"name": iso, "capacity": "1M"})
    assert r.status_code == 201, r.text
    before = volumes()
    for img, status, why in ((image, 409, f"in use by vm '{holder}'"), (iso, 422, "ISO image")):
        r = client.post(URL, json=body(img))
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert err["field"] == "image" and why in err["message"], err
        assert f"{POOL}/{img}" in err["message"], err
    assert volumes() == before
