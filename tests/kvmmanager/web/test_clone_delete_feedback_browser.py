"""Clone and delete say what they did in the VM's own name, in a real browser (issue 15):
the clone toast named the source by UUID (the page posts to the UUID address), and the
delete dialog promised a delete that a running VM then refused."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.shots import shot
from tests.kvmmanager.web.test_feedback_browser import DISK, PREFIX, UUID, WAIT, api, made, toast

pytestmark = pytest.mark.browser
__all__ = ["api"]  # the fixture, used by name


def test_clone_toast_names_the_source_vm(browser_login: Any, api: httpx.Client) -> None:
    name = f"{PREFIX}csrc"
    made(api.post("/api/hosts/local/vms", json={"name": name, "memory_mib": 64, "disks": [DISK]}))
    page = browser_login("admin")
    page.goto(f"/vms/local/{name}#snapshots")
    page.locator("#snapshots input[name=new_name]").fill(f"{name}-clone")
    page.locator("#snapshots button:text-is('Clone')").click()
    expect(page).to_have_url(re.compile(rf"/vms/local/{name}-clone$"), timeout=WAIT)
    done = toast(page, "ok", f"Cloned {name} to {name}-clone")
    expect(done).to_be_visible(timeout=WAIT)
    assert not UUID.search(done.inner_text()), done.inner_text()
    shot(page, "vm-cloned-toast")


def test_delete_dialog_says_a_running_vm_is_refused(browser_login: Any, api: httpx.Client) -> None:
    name = f"{PREFIX}drun"
    made(api.post("/api/hosts/local/vms", json={"name": name, "memory_mib": 64, "start": True}))
    page = browser_login("admin")
    said: list[str] = []

    def answer(dialog: Any) -> None:
        said.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", answer)
    page.goto(f"/vms/local/{name}")
    page.click("button:text-is('Delete VM')")
    expect(page.locator("text=Only a VM that is off can be deleted")).to_be_visible()
    page.wait_for_function("() => true")
    assert said and "running VM is refused" in said[0], said
