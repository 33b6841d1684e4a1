"""Migration options without any real host: where the data goes by default, and bad
bandwidth / migrate_uri values refused by the service and the REST route (4xx naming
the field)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import libvirt
import pytest

from kvmmanager.core.errors import InvalidInput
from kvmmanager.services.migration import MigrationOptions, default_migrate_uri
from kvmmanager.virt.xml.domain import Domain


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("qemu+tcp://10.0.0.2/system", "tcp://10.0.0.2"),
        ("qemu+ssh://root@node2.example:2222/system?keyfile=/k", "tcp://node2.example"),
        ("qemu+tls://[fd00::2]/system", "tcp://[fd00::2]"),
        ("qemu:///system", None),
        ("test:///default", None),
    ],
)
def test_default_migrate_uri_is_the_target_uris_host(target: str, expected: str | None) -> None:
    assert default_migrate_uri(target) == expected


def test_params() -> None:
    opts = MigrationOptions(bandwidth_mib=10)
    assert opts.params("qemu+tcp://10.0.0.2/system") == {
        libvirt.VIR_MIGRATE_PARAM_URI: "tcp://10.0.0.2",
        libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 10,
    }
    explicit = MigrationOptions(migrate_uri="tcp://192.168.5.2:49200")
    assert explicit.params("qemu+tcp://10.0.0.2/system") == {
        libvirt.VIR_MIGRATE_PARAM_URI: "tcp://192.168.5.2:49200"
    }
    assert MigrationOptions(live=False, bandwidth_mib=5).params("qemu+tcp://h/system") == {}
    assert MigrationOptions().params("qemu:///system") == {}


@pytest.mark.parametrize(
    "bad",
    ["ftp://h", "tcp://", "tcp://h/path", "tcp://h:99999", "tcp://u@h", "tcp://h?x=1", "h:1"],
)
def test_bad_migrate_uri(bad: str) -> None:
    with pytest.raises(InvalidInput) as e:
        MigrationOptions(migrate_uri=bad)
    assert e.value.field == "migrate_uri"


@pytest.mark.parametrize("bad", [0, -1, 1_000_001])
def test_bad_bandwidth(bad: int) -> None:
    with pytest.raises(InvalidInput) as e:
        MigrationOptions(bandwidth_mib=bad)
    assert e.value.field == "bandwidth_mib"


def dom_xml(name: str) -> str:
    dom = Domain(type="test", name=name, memory=65536)
    dom.os.os_type = "hvm"
    return dom.to_xml()


def test_routes_refuse_bad_options(client: Any) -> None:
    mgr = client.app.state.manager
    deadline = time.monotonic() + 30
    while not mgr.registry.get("local").connected:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    name = f"kvmm-t-mig-opt-{uuid.uuid4().hex[:6]}"
    conn = libvirt.open("test:///default")
    try:
        conn.defineXML(dom_xml(name)).create()
        base = f"/api/hosts/local/vms/{name}"
        r = client.post(f"{base}/migration/check", json={"target": "local", "bandwidth_mib": 0})
        assert r.status_code == 422 and "bandwidth_mib" in r.text
        r = client.post(
            f"{base}/migrate", json={"target": "local", "migrate_uri": "ftp://somewhere"}
        )
        assert r.status_code == 422 and r.json()["error"]["field"] == "migrate_uri"
        r = client.post(f"{base}/migration/check", json={"target": "local", "speed": 5})
        assert r.status_code == 422 and "speed" in r.text
    finally:
        d = conn.lookupByName(name)
        d.destroy()
        d.undefine()
        conn.close()
