"""The maximum for hot-add (issue 17 item 7) and user-mode NICs (item 5) in the web UI, on
the test driver: the create wizard and the Hardware tab offer both; a maximum below what
the VM has is refused in the form's words beside its input (create) or in a toast
(Hardware); a running VM grows live up to it."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator

import libvirt
import pytest

PREFIX = "kvmm-t-webmax-"


@pytest.fixture
def name() -> Iterator[str]:
    vm = f"{PREFIX}{uuid.uuid4().hex[:6]}"
    yield vm
    conn = libvirt.open("test:///default")
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith(PREFIX):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
    finally:
        conn.close()


def _toast(r) -> str:
    return json.loads(r.headers["HX-Trigger"])["kvmm-toast"]["message"]


def test_the_maximum_in_the_wizard_and_the_hardware_tab(web_as, name: str) -> None:
    c = web_as("operator")
    manager = c.app.state.manager
    deadline = time.monotonic() + 30
    while not manager.registry.get("local").connected:
        assert time.monotonic() < deadline, "local host did not connect"
        time.sleep(0.02)
    page = c.get("/vms/new").text
    assert 'name="max_vcpus"' in page and 'name="max_memory_mib"' in page
    headers = {"X-CSRF-Token": c.csrf, "HX-Request": "true"}
    form = {"host": "local", "name": name, "source": "blank", "vcpus": "2", "memory_mib": "128"}
    r = c.post("/vms/new", data={**form, "max_vcpus": "1"}, headers=headers)
    assert r.status_code == 422 and 'id="err-max_vcpus"' in r.text, r.text
    assert "Maximum vCPUs 1 is less than vCPUs 2" in r.text
    r = c.post("/vms/new", data={**form, "max_memory_mib": "lots"}, headers=headers)
    assert 'id="err-max_memory_mib"' in r.text and "not a whole number" in r.text

    r = c.post(
        "/vms/new",
        data={**form, "vcpus": "1", "max_vcpus": "4", "max_memory_mib": "512", "start": "true"},
        headers=headers,
        follow_redirects=False,
    )
    assert r.status_code in (204, 303), r.text  # htmx: HX-Redirect to the VM
    vm = manager.vms.get("local", name)
    assert (vm.vcpus, vm.max_vcpus, vm.max_memory_kib) == (1, 4, 512 * 1024)
    hardware = c.get(f"/vms/local/{name}/hardware").text
    assert re.search(r'name="max_vcpus" min="1" value="4"', hardware), hardware
    # 512 MiB, in the unit selector beside it (issue 15: units on the Hardware tab).
    assert re.search(r'name="max_memory_mib" min="0" step="any" value="512"', hardware), hardware
    assert re.search(r'name="max_memory_unit".*?<option selected>MiB', hardware, re.S), hardware

    resources = f"/vms/local/{name}/resources"
    r = c.post(
        resources,
        data={"vcpus": "3", "memory_mib": "384", "max_vcpus": "4", "max_memory_mib": "512"},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    assert "vCPUs set to 3: applied now" in _toast(r)
    assert "memory set to 384 MiB: applied now" in _toast(r)
    r = c.post(
        resources,
        data={"vcpus": "3", "memory_mib": "384", "max_vcpus": "2", "max_memory_mib": "512"},
        headers=headers,
    )
    assert r.status_code == 422
    assert "Maximum vCPUs 2 is less than vCPUs 3" in _toast(r), _toast(r)


def test_user_mode_nic_from_the_wizard_and_the_hardware_tab(web_as, name: str) -> None:
    """Issue 17 item 5: the network selects offer user-mode networking."""
    c = web_as("operator")
    manager = c.app.state.manager
    deadline = time.monotonic() + 30
    while not manager.registry.get("local").connected:
        assert time.monotonic() < deadline, "local host did not connect"
        time.sleep(0.02)
    assert 'value=":user"' in c.get("/vms/new").text
    headers = {"X-CSRF-Token": c.csrf, "HX-Request": "true"}
    form = {"host": "local", "name": name, "source": "blank", "memory_mib": "64"}
    r = c.post("/vms/new", data={**form, "network": ":user"}, headers=headers)
    assert r.status_code in (204, 303), r.text
    assert [n.type for n in manager.vms.get("local", name).nics] == ["user"]
    assert 'value=":user"' in c.get(f"/vms/local/{name}/hardware").text
    r = c.post(f"/vms/local/{name}/nics", data={"network": ":user"}, headers=headers)
    assert r.status_code == 200, r.text
    assert "Added a NIC with user (slirp) networking" in _toast(r), _toast(r)
