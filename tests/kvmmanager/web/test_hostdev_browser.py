"""Giving a host device to a VM in a real browser (Debian's Chromium through Playwright):
the Attach button asks first, saying what the host loses (the driver that uses the device
now, the IOMMU group members that go with it), and nothing changes unless the person says
yes. On a test-driver node file with PCI and USB devices (hostdev_node.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from tests.kvmmanager.services.hostdev_node import write as write_node
from tests.kvmmanager.web.shots import shot

from kvmmanager.core.config import Settings

pytestmark = pytest.mark.browser
VM = "kvmm-t-hostdev-web"
WAIT = 30_000  # ms: bounded waits for an answer on a loaded shared machine
UNUSED = "\u2013"  # the en dash of an empty "Used by" cell


@pytest.fixture
def node_host(settings: Settings, tmp_path: Path) -> None:
    """The live server's `local` host is a private test-driver instance with node devices
    (gone with the server's connection). Set before the live server starts."""
    settings.libvirt.default_uri = write_node(tmp_path / "node.xml")


def test_pci_attach_asks_first_and_says_what_the_host_loses(
    node_host: None, live_server: Any, browser_login: Any
) -> None:
    with httpx.Client(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {live_server.token}"},
        timeout=60,
    ) as api:
        r = api.post("/api/hosts/local/vms", json={"name": VM, "memory_mib": 64})
        assert r.status_code == 201, r.text
    page = browser_login("admin")
    page.goto(f"/vms/local/{VM}#devices")
    gpu = page.locator("#devices tr").filter(
        has=page.locator("td[data-label=Address]", has_text="0000:01:00.0")
    )
    expect(gpu.locator("td[data-label='Used by']")).to_have_text(UNUSED, timeout=WAIT)
    shot(page, "vm-devices-host-drivers")
    asked: list[str] = []

    def say_no(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", say_no)
    gpu.locator("button:text-is('Attach group')").click()
    expect(gpu.locator("td[data-label='Used by']")).to_have_text(UNUSED)
    assert len(asked) == 1, asked
    question = asked[0]
    for said in (
        f"Give 0000:01:00.0 (NVIDIA Corporation GP104) to '{VM}'?",
        "The host loses it for as long as the VM has it",
        # libvirt's test driver reports no drivers (the template test below has them).
        "no host driver holds it now and libvirt hands it to vfio-pci",
        "Its IOMMU group goes too: 0000:01:00.1 (GP104 HD Audio; no host driver holds it now)",
    ):
        assert said in question, question
    with httpx.Client(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {live_server.token}"},
        timeout=60,
    ) as api:
        devices = api.get(f"/api/hosts/local/vms/{VM}/hostdevs").json()
    assert devices == [], "a dismissed confirmation attached the device"

    page.once("dialog", lambda d: d.accept())
    gpu.locator("button:text-is('Attach group')").click()
    expect(gpu.locator("td[data-label='Used by']")).to_have_text(VM, timeout=WAIT)
    expect(page.locator("#toasts .toast.ok")).to_contain_text("attached", timeout=WAIT)
    shot(page, "vm-devices-attached")

    usb = page.locator("#devices tr", has_text="Flash Drive")
    page.once("dialog", say_no)
    usb.locator("button:text-is('Attach')").click()
    expect(usb.locator("td[data-label='Used by']")).to_have_text(UNUSED)
    assert asked[-1].startswith("Give the USB device ACME Flash Drive (bus 1 device 2)")


def test_the_question_names_the_host_drivers_that_let_go() -> None:
    """What a real host shows (its drivers, which the test driver does not report)."""
    from kvmmanager.services.vms.hostdevs import HostDevice
    from kvmmanager.web.templating import TEMPLATES

    macros = TEMPLATES.env.get_template("vms/_hostdev_confirm.html").module
    gpu = HostDevice(
        name="pci_0000_01_00_0", kind="pci", address="0000:01:00.0", vendor_name="NVIDIA",
        product_name="GP104", driver="nouveau", iommu_members=["0000:01:00.1"],
    )  # fmt: skip
    audio = HostDevice(
        name="pci_0000_01_00_1", kind="pci", address="0000:01:00.1",
        product_name="HD Audio", driver="snd_hda_intel",
    )  # fmt: skip
    said = str(macros.host_loses(gpu, "vm1", True, {audio.address: audio}))
    assert said == (
        "Give 0000:01:00.0 (NVIDIA GP104) to 'vm1'? The host loses it for as long as the VM "
        "has it: the host's driver nouveau lets go of it and libvirt hands it to vfio-pci. "
        "Its IOMMU group goes too: 0000:01:00.1 (HD Audio; the host's driver snd_hda_intel "
        "lets go of it) leaves the host. The running VM gets it now."
    )
    stick = HostDevice(name="usb_1_2", kind="usb", address="bus 1 device 2",
                       vendor_name="ACME", product_name="Stick", driver="usb-storage")  # fmt: skip
    assert str(macros.host_loses(stick, "vm1", False, {})) == (
        "Give the USB device ACME Stick (bus 1 device 2) to 'vm1'? The host loses it for as "
        "long as the VM has it: its driver usb-storage lets go of it."
    )
