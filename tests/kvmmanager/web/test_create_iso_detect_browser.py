"""OS auto-detection in the create flow, in a real browser (Debian's Chromium) against the
real libvirtd: small ISOs made here with pycdlib carry a volume id osinfo-db knows (a
Debian 11 netinst's) or one it does not; picking one in the form reads its volume
descriptor through libvirt and preselects the OS with a note naming the ISO, which the
user can override, and a choice made by hand is not overridden."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import libvirt
import pytest
from playwright.sync_api import expect
from tests.kvmmanager.iso_images import DEBIAN_NETINST, make_iso
from tests.kvmmanager.web.create_steps import step
from tests.kvmmanager.web.shots import shot
from tests.libvirtd_pools import LIBVIRTD_URI, DirPool

from kvmmanager.services.vms import osinfo

pytestmark = [pytest.mark.browser, pytest.mark.libvirtd]
WAIT = 30_000  # ms: libvirt storage calls on a loaded shared machine (bounded waits)
PREFIX = "kvmm-t-isod-"


@pytest.fixture
def iso_pool(live_server: Any, dir_pool: Callable[..., DirPool]) -> str:
    """A dir pool on qemu:///system with two ISOs (Debian 11 netinst's volume id, and
    one osinfo-db does not know), seen by the live server's second host "real"."""
    made = dir_pool(PREFIX)
    (made.path / f"{PREFIX}debian.iso").write_bytes(make_iso(DEBIAN_NETINST))
    (made.path / f"{PREFIX}other.iso").write_bytes(make_iso("KVMM_NOT_AN_OS"))
    conn = libvirt.open(LIBVIRTD_URI)
    try:
        conn.storagePoolLookupByName(made.name).refresh(0)
    finally:
        conn.close()
    with httpx.Client(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {live_server.token}"},
        timeout=60,
    ) as c:
        r = c.post("/api/hosts", json={"name": "real", "uri": LIBVIRTD_URI})
        assert r.status_code in (200, 201), r.text
        deadline = time.monotonic() + 60
        while c.get("/api/hosts/real").json().get("status") != "connected":
            assert time.monotonic() < deadline, "host real did not connect"
            time.sleep(0.1)
    return made.name


def test_the_os_is_detected_from_the_picked_iso_and_can_be_overridden(
    browser_login: Any, iso_pool: str
) -> None:
    if not osinfo.available():
        pytest.fail("osinfo-db is missing: scripts/setup --dev installs it")
    page = browser_login("admin")
    page.goto("/vms/new?host=real")
    form = page.locator("form#new-vm")
    form.locator("input[name=name]").fill(f"{PREFIX}vm")
    step(page, 3)
    form.locator("input[name=source][value=iso]").check()
    note = form.locator("#iso-detect")
    form.locator("select[name=iso]").select_option(f"{iso_pool}/{PREFIX}other.iso")
    expect(note).to_contain_text(
        f"No OS in osinfo-db matches {PREFIX}other.iso (volume id “KVMM_NOT_AN_OS”)",
        timeout=WAIT,
    )
    expect(form.locator("input[name=os]")).to_have_value("")

    form.locator("select[name=iso]").select_option(f"{iso_pool}/{PREFIX}debian.iso")
    expect(note).to_contain_text(
        f"Detected Debian 11 from {PREFIX}debian.iso (volume id “{DEBIAN_NETINST}”)",
        timeout=WAIT,
    )
    expect(form.locator("input[name=os]")).to_have_value("debian11")
    expect(form.locator("select[name=disk_bus]")).to_have_value("virtio")
    shot(page, "create-iso-os-detected")
    step(page, 1)
    expect(form.locator("#os-picked")).to_have_text("Debian 11")
    expect(form.locator("#os-detected")).to_have_text(
        f"Detected from {PREFIX}debian.iso: search above to choose another."
    )
    shot(page, "create-iso-os-detected-step1")
    step(page, 4)
    expect(form.locator("#review")).to_contain_text("Debian 11")

    # Overridden by hand: the hand's choice stays when an ISO is picked again.
    step(page, 1)
    form.locator("input[name=os_query]").fill("windows 11")
    form.locator("#os-results button", has_text="Microsoft Windows 11").click()
    expect(form.locator("#os-picked")).to_have_text("Microsoft Windows 11", timeout=WAIT)
    expect(form.locator("#os-detected")).to_have_count(0)
    expect(form.locator("input[name=os]")).to_have_value("win11")
    step(page, 3)
    form.locator("select[name=iso]").select_option(f"{iso_pool}/{PREFIX}other.iso")
    expect(note).to_contain_text("No OS in osinfo-db matches", timeout=WAIT)
    form.locator("select[name=iso]").select_option(f"{iso_pool}/{PREFIX}debian.iso")
    expect(note).to_contain_text(
        f"{PREFIX}debian.iso looks like Debian 11 (volume id “{DEBIAN_NETINST}”); the OS you "
        "chose in step 1 (Microsoft Windows 11) stays.",
        timeout=WAIT,
    )
    expect(form.locator("input[name=os]")).to_have_value("win11")
    expect(form.locator("select[name=disk_bus]")).to_have_value("sata")
