"""The Hardware tab's sizes carry their units (issue 15): memory was a bare number of MiB
("Memory (MiB) 1024"), disks had no size at all, and a new disk was in GiB only. Now
memory and maximum memory have a MiB/GiB selector as in the create form (whole GiB shown
as GiB), each disk shows its size, and a new disk's size has a MiB/GiB/TiB selector."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.shots import shot
from tests.kvmmanager.web.test_feedback_browser import DISK, PREFIX, WAIT, api, made, toast

pytestmark = pytest.mark.browser
__all__ = ["api"]  # the fixture, used by name


def test_hardware_sizes_show_their_units(browser_login: Any, api: httpx.Client) -> None:
    name = f"{PREFIX}units"
    vm = {"name": name, "memory_mib": 1024, "disks": [DISK]}
    made(api.post("/api/hosts/local/vms", json=vm))
    page = browser_login("admin")
    page.goto(f"/vms/local/{name}#hardware")
    hw = page.locator("#hardware")
    memory = hw.locator("input[name=memory_mib]")
    expect(memory).to_have_value("1")
    expect(hw.locator("select[name=memory_unit]")).to_have_value("GiB")
    expect(hw.locator("select[name=max_memory_unit]")).to_have_value("GiB")
    expect(hw.locator("td[data-disk-size]").first).to_have_text("1.0 GiB")
    expect(hw.locator("select[name=disk_unit]")).to_have_value("GiB")
    shot(page, "vm-hardware-units")

    memory.fill("512")
    hw.locator("select[name=memory_unit]").select_option("MiB")
    hw.locator("input[name=max_memory_mib]").fill("512")
    hw.locator("select[name=max_memory_unit]").select_option("MiB")
    hw.locator("button:text-is('Apply')").click()
    expect(toast(page, "ok", "")).to_be_visible(timeout=WAIT)
    expect(hw.locator("input[name=memory_mib]")).to_have_value("512", timeout=WAIT)
    expect(hw.locator("select[name=memory_unit]")).to_have_value("MiB")
    assert api.get(f"/api/hosts/local/vms/{name}").json()["memory_kib"] == 512 * 1024

    # A 512 MiB disk, asked for in MiB.
    hw.locator("input[name=size_gib]").fill("512")
    hw.locator("select[name=disk_unit]").select_option("MiB")
    hw.locator("button:text-is('Attach disk')").click()
    expect(toast(page, "ok", "Attached disk vdb")).to_be_visible(timeout=WAIT)
    expect(hw.locator("td[data-disk-size]").nth(1)).to_have_text("512.0 MiB", timeout=WAIT)
