"""The VM list with more VMs than fit on the screen, in a real browser (issue 19): a
running VM's addresses are looked up when its row scrolls into view, not for every row
on load (at 5,000 VMs that was 5,000 lookups on the host per page load)."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from kvmmanager.core.config import Settings

pytestmark = pytest.mark.browser

PREFIX = "kvmm-t-lscale-"
VMS = 60
# A bounded wait, not a speed claim: the rows in view are answered a few at a time by the
# host's workers, and the machine may be busy (the clean-chroot job runs beside the suite).
WAIT = 60_000


def _node_file(path: Path) -> Path:
    """A test-driver host of VMS running domains, each with one NIC."""
    node = ET.Element("node")
    for i in range(VMS):
        d = ET.SubElement(node, "domain", type="test")
        ET.SubElement(d, "name").text = f"{PREFIX}{i:03d}"
        ET.SubElement(d, "uuid").text = str(uuid.UUID(int=0x6C73_0000_4000_8000_000000000000 + i))
        ET.SubElement(d, "memory", unit="KiB").text = "65536"
        ET.SubElement(d, "vcpu").text = "1"
        ET.SubElement(ET.SubElement(d, "os"), "type").text = "hvm"
        nic = ET.SubElement(ET.SubElement(d, "devices"), "interface", type="network")
        ET.SubElement(nic, "mac", address=f"52:54:00:6c:00:{i:02x}")
        ET.SubElement(nic, "source", network="default")
    net = ET.SubElement(node, "network")
    ET.SubElement(net, "name").text = "default"
    ET.SubElement(net, "bridge", name="virbr0")
    # The test driver makes its addresses up from the network's DHCP range (without one,
    # libvirt 9.0's test driver crashes in virDomainInterfaceAddresses).
    ip = ET.SubElement(net, "ip", address="192.168.122.1", netmask="255.255.255.0")
    ET.SubElement(ET.SubElement(ip, "dhcp"), "range", start="192.168.122.2", end="192.168.122.254")
    ET.ElementTree(node).write(path, encoding="unicode")
    return path


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    settings.libvirt.default_uri = f"test://{_node_file(tmp_path / 'node.xml')}"
    return settings


def test_addresses_are_looked_up_for_the_rows_in_view(browser_login: Any) -> None:
    page = browser_login("viewer")
    lookups: list[str] = []
    page.on(
        "request",
        lambda r: urlsplit(r.url).path.endswith("/addresses") and lookups.append(r.url),
    )
    page.goto("/vms")
    rows = page.locator("#vm-rows tr")
    expect(rows).to_have_count(VMS)
    first = rows.first.locator('td[data-label="Addresses"]')
    expect(first).not_to_contain_text("…", timeout=WAIT)
    page.wait_for_load_state("networkidle", timeout=WAIT)
    # The rows below the fold have asked nothing yet. Counted per VM: a live refresh of
    # the table (the host's connect event arrives just after the page) puts fresh rows in
    # place, and the rows in view ask again.
    asked = {urlsplit(u).path.split("/")[3] for u in lookups}
    assert 0 < len(asked) < VMS // 2, sorted(asked)
    last = rows.last.locator('td[data-label="Addresses"]')
    expect(last).to_contain_text("…")
    last.scroll_into_view_if_needed()
    expect(last).not_to_contain_text("…", timeout=WAIT)
    assert any(
        f"/{uuid.UUID(int=0x6C73_0000_4000_8000_000000000000 + VMS - 1)}/" in u for u in lookups
    )
