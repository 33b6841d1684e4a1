"""The disk pickers a person sees (Hardware's "Attach disk", the create form's "Import an
existing disk" and "Cloud image") offer only volumes that can become a disk, each named
with its pool: a volume a VM holds (this VM's own disk, a running VM's) is shown disabled
with the reason; an ISO image is not offered as a disk, nor a volume another user owns
(their VM's disk, or one they made). On libvirt's test driver; the server's refusal of
the same cases: test_vms_api.py (attach) and test_create_sources_browser.py (import)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.live_api import api_client
from tests.kvmmanager.web.shots import shot

from kvmmanager.services.storage.xml import build_volume_xml

pytestmark = pytest.mark.browser
POOL = "default-pool"
PREFIX = "kvmm-t-pick-"
VMS = "/api/hosts/local/vms"
WAIT = 30_000  # ms: bounded waits for an answer on a loaded shared machine


@pytest.fixture
def tag() -> Iterator[str]:
    """A unique name part; every domain and volume named PREFIX+tag is removed after."""
    tag = uuid.uuid4().hex[:6]
    yield tag
    conn = libvirt.open("test:///default")
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith(PREFIX + tag):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        for vol in conn.storagePoolLookupByName(POOL).listAllVolumes():
            if vol.name().startswith(PREFIX + tag):
                vol.delete(0)
    finally:
        conn.close()


def make_volume(name: str, fmt: str = "qcow2") -> None:
    conn = libvirt.open("test:///default")
    try:
        conn.storagePoolLookupByName(POOL).createXML(build_volume_xml(name, 1024**2, fmt), 0)
    finally:
        conn.close()


def options(select: Any, prefix: str) -> list[tuple[str, bool]]:
    """(text, disabled) of each option of ours in the picker, in order."""
    found = select.locator("option").evaluate_all(
        "os => os.map(o => [o.textContent.trim(), o.disabled])"
    )
    return [(text, disabled) for text, disabled in found if prefix in text]


def test_disk_pickers_offer_only_usable_volumes_with_their_pool_and_why_not(
    browser_login: Any, live_server: Any, tag: str
) -> None:
    page = browser_login("operator")
    me, p = page.username, PREFIX + tag
    with api_client(live_server) as api:
        for vm, owner in ((f"{p}-mine", me), (f"{p}-run", me), (f"{p}-theirs", "admin")):
            disk = {"pool": POOL, "size_gib": 1, "name": f"{vm}-a.qcow2"}
            body = {"name": vm, "memory_mib": 64, "owner": owner, "disks": [disk]}
            r = api.post(VMS, json=body)
            assert r.status_code == 201, r.text
        r = api.post(f"{VMS}/{p}-run/actions/start")
        assert r.status_code == 200, r.text
    make_volume(f"{p}-free.qcow2")
    make_volume(f"{p}-setup.iso", "raw")
    make_volume(f"{p}-someones.qcow2")
    live_server.manager.ownership.record_volume("local", POOL, f"{p}-someones.qcow2", "someone")
    expected = [
        (f"{POOL}/{p}-free.qcow2", False),
        (f"{POOL}/{p}-mine-a.qcow2 (in use by vm {p}-mine)", True),
        (f"{POOL}/{p}-run-a.qcow2 (in use by vm {p}-run)", True),
    ]

    page.goto(f"/vms/local/{p}-mine#hardware")
    picker = page.locator("#hardware").get_by_label("Existing volume")
    expect(picker).to_be_visible(timeout=WAIT)
    assert options(picker, p) == expected
    shot(page, "hardware-attach-disk-picker")

    page.goto("/vms/new")
    for name in ("import_volume", "cloud_image"):
        assert options(page.locator(f"form#new-vm select[name={name}]"), p) == expected, name
