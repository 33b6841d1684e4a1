"""The create form's unit selectors on the server side (test driver): memory and maximum
memory in MiB or GiB, the new disk in MiB, GiB or TiB, turned into the VM service's units;
a size that is no whole number of MiB is refused beside its field in the form's words."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

PREFIX = "kvmm-t-units-"


@pytest.fixture
def name() -> Iterator[str]:
    vm = f"{PREFIX}{uuid.uuid4().hex[:6]}"
    yield vm
    conn = libvirt.open("test:///default")
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith(PREFIX):
                dom.undefine()
        for vol in conn.storagePoolLookupByName("default-pool").listAllVolumes():
            if vol.name().startswith(PREFIX):
                vol.delete(0)
    finally:
        conn.close()


def test_sizes_are_taken_in_their_units(web_as: Any, name: str) -> None:
    c = web_as("operator")
    manager = c.app.state.manager
    deadline = time.monotonic() + 30
    while not manager.registry.get("local").connected:
        assert time.monotonic() < deadline, "local host did not connect"
        time.sleep(0.02)
    headers = {"X-CSRF-Token": c.csrf, "HX-Request": "true"}
    form = {"host": "local", "name": name, "source": "blank", "disk_pool": "default-pool"}
    r = c.post(
        "/vms/new",
        data={**form, "memory_mib": "0.3", "memory_unit": "GiB", "disk_gib": "0"},
        headers=headers,
    )
    assert r.status_code == 422 and 'id="err-memory_mib"' in r.text, r.text
    assert "Memory: 0.3 GiB is not a whole number of MiB" in r.text
    # What was typed comes back with its unit.
    assert re.search(r'name="memory_unit"[^>]*><option\s*>MiB</option><option selected>GiB', r.text)

    sizes = {"memory_mib": "1.5", "memory_unit": "GiB", "max_memory_mib": "2"}
    sizes |= {"max_memory_unit": "GiB", "disk_gib": "256", "disk_unit": "MiB"}
    r = c.post("/vms/new", data={**form, **sizes}, headers=headers, follow_redirects=False)
    assert r.status_code == 204, r.text
    vm = manager.vms.get("local", name)
    assert (vm.memory_kib, vm.max_memory_kib) == (1536 * 1024, 2048 * 1024)
    conn = libvirt.open("test:///default")
    try:
        vol = conn.storagePoolLookupByName("default-pool").storageVolLookupByName(f"{name}.qcow2")
        assert vol.info()[1] == 256 * 1024 * 1024
    finally:
        conn.close()
