"""The create wizard's "Cloud image" source on the test driver: the option and its
cloud-init and agent permission fields are offered; refusals show beside the right input
(bad SSH key, image not picked, disk smaller than the image, unknown user name, a
relative path or a command with arguments for the agent) and never echo the password;
nothing is made. Provisioning itself: tests/e2e/test_85_cloudinit.py (real guest)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import libvirt
import pytest

from kvmmanager.services.storage.xml import build_volume_xml

POOL = "default-pool"
PREFIX = "kvmm-t-webci-"


@pytest.fixture
def image() -> Iterator[str]:
    name = f"{PREFIX}{uuid.uuid4().hex[:6]}.qcow2"
    conn = libvirt.open("test:///default")
    pool = conn.storagePoolLookupByName(POOL)
    pool.createXML(
        build_volume_xml(name, 2 << 30, "qcow2"),
        0,
    )
    try:
        yield name
    finally:
        for vol in pool.listAllVolumes():
            if vol.name().startswith(PREFIX):
                vol.delete(0)
        for dom in conn.listAllDomains():
            if dom.name().startswith(PREFIX):
                dom.undefine()
        conn.close()


def volumes() -> list[str]:
    conn = libvirt.open("test:///default")
    try:
        return sorted(
            v for v in conn.storagePoolLookupByName(POOL).listVolumes() if v.startswith(PREFIX)
        )
    finally:
        conn.close()


def test_cloud_image_option_and_inline_refusals(web_as, image: str) -> None:
    c = web_as("operator")
    page = c.get("/vms/new").text
    assert 'value="cloud"' in page and 'name="ci_ssh_keys"' in page
    assert "Agent permissions" in page and 'name="ag_read"' in page and 'name="ag_exec"' in page
    assert f'value="{POOL}/{image}"' in page
    headers = {"X-CSRF-Token": c.csrf, "HX-Request": "true"}
    form = {
        "host": "local",
        "name": f"{PREFIX}vm",
        "source": "cloud",
        "cloud_image": f"{POOL}/{image}",
        "disk_gib": "4",
        "disk_pool": POOL,
        "ci_user": "alice",
        "ci_password": "sekrit-pass-1",
        "install_agent": "true",
    }
    cases = [
        ({"ci_ssh_keys": "ssh-ed25519 nope"}, "ci_ssh_keys"),
        ({"cloud_image": ""}, "source"),
        ({"disk_gib": "1"}, "disk_gib"),
        ({"ci_user": "Bad User"}, "ci_user"),
        ({"ci_hostname": "bad_host!"}, "ci_hostname"),
        ({"cloud_image": f"{POOL}/{PREFIX}missing.qcow2"}, "source"),
        # The agent's permissions: each refusal beside its own box.
        ({"ag_read": "/etc\nhome/alice"}, "ag_read"),
        ({"ag_write": "/srv/../etc"}, "ag_write"),
        ({"ag_exec": "rm -rf /"}, "ag_exec"),
    ]
    before = volumes()
    for change, field in cases:
        r = c.post("/vms/new", data={**form, **change}, headers=headers)
        assert r.status_code == 422, (change, r.text)
        assert re.search(rf'id="err-{field}"', r.text), (change, r.text)
        assert "sekrit-pass-1" not in r.text
        for key, value in change.items():
            if key.startswith("ag_"):  # kept in its box for correcting
                assert value.split("\n")[-1] in r.text, (change, r.text)
    assert volumes() == before
    conn = libvirt.open("test:///default")
    try:
        assert not [d for d in conn.listAllDomains() if d.name().startswith(PREFIX)]
    finally:
        conn.close()


def test_agent_permission_lines_add_to_the_defaults() -> None:
    from kvmmanager.web.routes.create import _agent_policy

    assert _agent_policy(lambda key: "") is None  # the packaged config stays
    form = {"ag_read": "/etc\n\n /home/alice/.ssh \n/var/log", "ag_exec": "id\nid"}
    policy = _agent_policy(lambda key: form.get(key, ""))
    assert policy is not None
    assert policy.allowed_read_paths == ["/var/log", "/tmp", "/etc", "/home/alice/.ssh"]
    assert policy.allowed_write_paths == ["/tmp"] and policy.command_whitelist == ["id"]
