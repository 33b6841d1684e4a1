"""The create form's checks before submit, in a real browser (Debian's Chromium, libvirt's
test driver): the VM's name is checked while typed together with the volume it would
name after itself in the chosen pool; each pool shows its free space and a new disk
larger than it is warned of; memory and disk take a unit."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.create_steps import step, submit
from tests.kvmmanager.web.shots import shot

pytestmark = pytest.mark.browser
WAIT = 30_000  # ms: bounded waits on a loaded shared machine
PREFIX = "kvmm-t-chk-"
POOL = "default-pool"  # the test driver's pool: 100 GiB, all free


def _api(live_server: Any) -> httpx.Client:
    return httpx.Client(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {live_server.token}"},
        timeout=60,
    )


def test_the_name_is_checked_with_its_volume_while_typed(
    browser_login: Any, live_server: Any
) -> None:
    with _api(live_server) as c:
        r = c.post("/api/hosts/local/vms", json={"name": f"{PREFIX}taken", "memory_mib": 64})
        assert r.status_code in (200, 201, 202), r.text
        r = c.post(
            f"/api/hosts/local/pools/{POOL}/volumes",
            json={"name": f"{PREFIX}vol.qcow2", "capacity": "1M", "format": "qcow2"},
        )
        assert r.status_code == 201, r.text
    page = browser_login("operator")
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    page.goto("/vms/new")
    name = page.locator("form#new-vm input[name=name]")
    check = page.locator("#name-check")

    name.fill(f"{PREFIX}taken")
    expect(check).to_have_text(f"A VM named '{PREFIX}taken' already exists on local", timeout=WAIT)
    name.fill("bad/name")
    expect(check).to_contain_text("'/' is not allowed", timeout=WAIT)
    name.fill("k" * 64)
    expect(check).to_contain_text("Too long for a VM with a new disk", timeout=WAIT)
    expect(check).to_contain_text("at most 58 for the name")
    name.fill(f"{PREFIX}vol")
    expect(check).to_contain_text(
        f"The volume '{PREFIX}vol.qcow2' this VM would make already exists in pool '{POOL}'",
        timeout=WAIT,
    )
    expect(check.locator("[role=alert]")).to_be_visible()
    shot(page, "create-name-volume-taken")
    # Without a new disk the same name makes no volume: the check is asked again.
    step(page, 3)
    page.locator("form#new-vm input[name=disk_gib]").fill("0")
    step(page, 1)
    expect(check).to_have_text(f"“{PREFIX}vol” is free.", timeout=WAIT)
    name.fill(f"{PREFIX}new")
    expect(check).to_have_text(f"“{PREFIX}new” is free.", timeout=WAIT)
    step(page, 3)
    page.locator("form#new-vm input[name=disk_gib]").fill("2")
    step(page, 1)
    expect(check).to_have_text(
        f"“{PREFIX}new” is free; it will make {PREFIX}new.qcow2 in pool {POOL}.", timeout=WAIT
    )
    assert posts == [], posts  # all of it before any submit
    with _api(live_server) as c:
        c.delete(f"/api/hosts/local/vms/{PREFIX}taken")
        c.delete(f"/api/hosts/local/pools/{POOL}/volumes/{PREFIX}vol.qcow2")


def test_pool_free_space_is_shown_and_a_larger_disk_warned_of_with_units(
    browser_login: Any, live_server: Any
) -> None:
    page = browser_login("operator")
    page.goto("/vms/new")
    form = page.locator("form#new-vm")
    form.locator("input[name=name]").fill(f"{PREFIX}units")
    step(page, 2)
    form.locator("input[name=memory_mib]").fill("1.5")
    form.locator("select[name=memory_unit]").select_option("GiB")
    step(page, 3)
    form.locator("input[name=source][value=blank]").check()
    option = form.locator(f"select[name=disk_pool] option[value='{POOL}']")
    expect(option).to_have_text(f"{POOL} (100.0 GiB free)")
    warning = form.locator("#disk-space")
    disk = form.locator("input[name=disk_gib]")
    disk.fill("200")
    expect(warning).to_be_visible()
    expect(warning).to_have_text(
        f"The new disk is larger than the 100.0 GiB free in pool {POOL}: the pool fills up "
        "before the disk does."
    )
    shot(page, "create-disk-larger-than-pool")
    disk.fill("50")
    expect(warning).to_be_hidden()
    form.locator("select[name=disk_unit]").select_option("TiB")
    expect(warning).to_be_visible()
    disk.fill("512")
    form.locator("select[name=disk_unit]").select_option("MiB")
    expect(warning).to_be_hidden()
    step(page, 4)
    review = form.locator("#review")
    expect(review).to_contain_text("1.5 GiB")
    expect(review).to_contain_text(f"512 MiB in {POOL}")
    form.locator("input[name=install_agent]").uncheck()
    submit(page)
    expect(page).to_have_url(re.compile(rf"/vms/local/{PREFIX}units$"), timeout=WAIT)
    with _api(live_server) as c:
        vm = c.get(f"/api/hosts/local/vms/{PREFIX}units").json()
        assert vm["memory_kib"] == 1536 * 1024, vm
        vols = c.get(f"/api/hosts/local/pools/{POOL}/volumes").json()
        made = [v for v in vols if v["name"] == f"{PREFIX}units.qcow2"]
        assert made and made[0]["capacity"] == 512 * 1024 * 1024, made
        c.delete(f"/api/hosts/local/vms/{PREFIX}units", params={"remove_volumes": True})
