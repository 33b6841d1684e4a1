"""A VM's state reads in plain words on the VM page and in the VM list: "running", not
libvirt's "running unpaused"; "off (forced off)", not "shutoff destroyed". The REST API
keeps libvirt's names. On libvirt's test driver."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.live_api import api_client
from tests.kvmmanager.web.shots import shot

pytestmark = pytest.mark.browser
NAME = "kvmm-t-words-vm"
VM = f"/api/hosts/local/vms/{NAME}"
WAIT = 30_000  # ms: bounded waits for an answer on a loaded shared machine


@pytest.fixture
def api(live_server: Any) -> Iterator[httpx.Client]:
    with api_client(live_server) as c:
        yield c
        c.post(f"{VM}/actions/destroy")
        c.delete(VM)


def act(api: httpx.Client, action: str) -> None:
    r = api.post(f"{VM}/actions/{action}")
    assert r.status_code == 200, r.text


def test_vm_states_read_as_plain_words(browser_login: Any, api: httpx.Client) -> None:
    r = api.post("/api/hosts/local/vms", json={"name": NAME, "memory_mib": 64})
    assert r.status_code == 201, r.text
    for action in ("start", "suspend", "resume"):  # libvirt's reason: "unpaused"
        act(api, action)
    assert api.get(VM).json()["state_reason"] == "unpaused"
    page = browser_login("operator")
    page.goto(f"/vms/local/{NAME}")
    header = page.locator("#overview .actions").first
    expect(page.locator("#vm-state")).to_have_text("running")
    expect(header).not_to_contain_text("unpaused")
    row = lambda: page.locator("tr", has_text=NAME)  # noqa: E731 (re-read after a swap)

    act(api, "destroy")
    vm = api.get(VM).json()  # the API keeps libvirt's words
    assert (vm["state"], vm["state_reason"]) == ("shutoff", "destroyed")
    page.reload()
    expect(page.locator("#vm-state")).to_have_text("off")
    expect(page.locator("#vm-state-detail")).to_have_text("(forced off)")
    expect(header).not_to_contain_text("shutoff")
    expect(header).not_to_contain_text("destroyed")
    shot(page, "vm-state-forced-off")

    page.goto("/vms")
    expect(row().locator("[data-state]")).to_have_text("off")
    expect(row().locator("td[data-label=State]")).to_have_text("off (forced off)")
    expect(page.locator("select[name=state] option[value=shutoff]")).to_have_text("off")
    shot(page, "vm-list-states")
