"""The devices router on test:///default: listing, SPICE displays, .vv refusals, roles."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import libvirt
import pytest
from fastapi.testclient import TestClient

NAME = "kvmm-t-devapi"
VM = f"/api/hosts/local/vms/{NAME}"


@pytest.fixture
def vm(client: TestClient) -> Iterator[TestClient]:
    r = client.post("/api/hosts/local/vms", json={"name": NAME, "memory_mib": 128, "spice": True})
    assert r.status_code == 201, r.text
    yield client
    conn = libvirt.open("test:///default")
    try:
        for dom in conn.listAllDomains():
            if dom.name() == NAME:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
    finally:
        conn.close()


def test_devices_and_displays(vm: TestClient, client_as: Callable[[str], TestClient]) -> None:
    r = vm.get("/api/hosts/local/devices")
    assert r.status_code == 200 and isinstance(r.json(), list)
    assert vm.get("/api/hosts/local/devices", params={"kind": "disk"}).status_code == 422
    assert vm.get(f"{VM}/hostdevs").json() == []
    r = vm.post(f"{VM}/hostdevs", json={"device": "pci_0000_09_00_0"})
    assert r.status_code == 404 and "no device" in r.json()["error"]["message"]
    r = vm.put(f"{VM}/graphics", json={"vnc": True, "spice": False})
    assert r.status_code == 200 and "removed SPICE" in r.json()["message"]
    r = vm.put(f"{VM}/graphics", json={"vnc": False, "spice": False})
    assert r.status_code == 422
    r = vm.post(f"{VM}/spice/vv")
    assert r.status_code == 409 and "not running" in r.json()["error"]["message"]
    viewer = client_as("viewer")
    assert viewer.post(f"{VM}/spice/vv").status_code == 403
    assert viewer.get(f"{VM}/port-forwards").status_code == 200


def test_port_forward_refusal_points_to_the_docs(vm: TestClient) -> None:
    r = vm.post(f"{VM}/port-forwards", json={"proto": "tcp", "host_port": 2222})
    assert r.status_code == 422
    assert "docs/operations.md" in r.json()["error"]["message"]
    r = vm.post(f"{VM}/port-forwards", json={"proto": "tcp", "host_port": 0})
    assert r.status_code == 422
    assert vm.delete(f"{VM}/port-forwards/tcp/2222").status_code == 422


def test_cli_lists_devices(cli: Callable[..., Any]) -> None:
    res = cli("--json", "hostdev", "list")
    assert res.exit_code == 0, res.stdout + res.stderr
    res = cli("portfwd", "add", "test", "tcp", "2222", "22")
    assert res.exit_code != 0 and "no user-mode (passt) NIC" in (res.stderr or res.stdout)


def test_web_devices_tab(vm: TestClient) -> None:
    uuid = vm.get(VM).json()["uuid"]
    r = vm.get(f"/vms/local/{uuid}/devices")
    assert r.status_code == 200, r.text
    assert "Download .vv" in r.text and "No user-mode (passt) NIC" in r.text
    graphics = f"/vms/local/{uuid}/devices/graphics"
    on = {"vnc": "true", "spice": "true", "usb_redirection": "true"}
    r = vm.post(graphics, data=on)
    assert r.status_code == 200 and "USB redirection" in r.headers["HX-Trigger"]
    assert "USB redirection: yes" in r.text
    assert re.search(r'name="usb_redirection" value="true"\s+checked', r.text)
    redirdevs = vm.get(f"{VM}/xml").json()["xml"].count("<redirdev ")
    assert redirdevs > 0
    # An unticked box removes the slots; a tick without SPICE is refused, naming why.
    r = vm.post(graphics, data={"vnc": "true", "spice": "true"})
    assert r.status_code == 200 and "USB redirection: no" in r.text
    assert "<redirdev " not in vm.get(f"{VM}/xml").json()["xml"]
    r = vm.post(graphics, data={"vnc": "true", "usb_redirection": "true"})
    assert r.status_code == 422 and "enable spice too" in r.headers["HX-Trigger"]
    r = vm.post(f"/vms/local/{uuid}/devices/graphics", data={"vnc": "true"})
    assert r.status_code == 200 and "removed SPICE" in r.headers["HX-Trigger"]
    assert "Download .vv" not in r.text
    r = vm.post(f"/vms/local/{uuid}/devices/forwards", data={"proto": "tcp", "host_port": "22"})
    assert r.status_code == 422 and "docs/operations.md" in r.headers["HX-Trigger"]


def test_graphics_change_on_a_shut_off_vm_says_it_applies_when_it_starts(vm: TestClient) -> None:
    """Issue 17 item 20: `spice set` on a shut-off VM answered applied_live no, next_boot
    no, although the definition had changed."""
    r = vm.put(f"{VM}/graphics", json={"vnc": True, "spice": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["applied_live"], body["next_boot"]) == (False, True)
    assert body["message"] == "removed SPICE; takes effect when it starts"
