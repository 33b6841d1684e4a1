"""The Hardware tab's CD-ROM picker (issue 15): it showed the first ISO of the first pool
whatever the drive held, so after inserting a disc the picker named another one, and an
empty drive offered a disc nobody chose. It now shows the disc the drive holds, asks for a
choice when the drive is empty, and "Upload an ISO" leads to the pool of the ISOs."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.shots import shot
from tests.kvmmanager.web.test_feedback_browser import DISK, POOL, PREFIX, WAIT, api, made, toast

pytestmark = pytest.mark.browser
__all__ = ["api"]  # the fixture, used by name
ISOS = (f"{PREFIX}cd-a.iso", f"{PREFIX}cd-b.iso")


def test_cd_picker_shows_the_held_disc_and_asks_when_empty(
    browser_login: Any, api: httpx.Client
) -> None:
    name = f"{PREFIX}cd"
    made(api.post("/api/hosts/local/vms", json={"name": name, "memory_mib": 64, "disks": [DISK]}))
    try:
        for iso in ISOS:
            made(api.post(f"{POOL}/volumes", json={"name": iso, "capacity": "1M", "format": "raw"}))
        page = browser_login("admin")
        page.goto(f"/vms/local/{name}#hardware")
        hw = page.locator("#hardware")
        picker = hw.locator("select[name=volume][aria-label^='ISO volume']")
        expect(picker).to_have_value("")  # an empty drive: nothing chosen for the person
        expect(picker.locator("option:checked")).to_have_text("Choose an ISO…")
        upload = hw.locator("a[data-upload-iso]")
        expect(upload).to_have_attribute("href", "/storage/local/default-pool#upload")
        picker.select_option(f"default-pool/{ISOS[1]}")
        hw.locator("button:text-is('Insert')").click()
        expect(toast(page, "ok", f"Inserted {ISOS[1]}")).to_be_visible(timeout=WAIT)
        # The re-drawn tab names the disc the drive holds now.
        expect(hw.locator("select[name=volume][aria-label^='ISO volume']")).to_have_value(
            f"default-pool/{ISOS[1]}", timeout=WAIT
        )
        shot(page, "vm-hardware-cd-inserted")
    finally:
        api.post(f"/api/hosts/local/vms/{name}/actions/destroy")
        api.delete(f"/api/hosts/local/vms/{name}", params={"remove_volumes": True})
        for iso in ISOS:
            api.delete(f"{POOL}/volumes/{iso}")
