"""Scenario 7b: the web UI against a real TCG guest, in Debian's Chromium — the VNC
console shows pixels, the serial console shows the guest booting, the guest-agent facts
show the guest's real hostname, and a hostile hostname is shown as text, never run."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from .conftest import E2eServer, Fleet, Lab
from .support.events import agent_event

pytestmark = [pytest.mark.vm, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PASSWORD = "kvmm-e2e-web-password"
EVIL = '<img src=x onerror="document.title=1">'


@pytest.fixture(scope="module")
def page(e2e_server: E2eServer, run_id: str) -> Iterator[Any]:
    assert shutil.which(CHROMIUM), "scripts/setup --dev installs Debian's chromium"
    from playwright.sync_api import sync_playwright

    username = f"kvmm-e2e-web-{run_id}"
    # An admin: the guests belong to the suite's admin token, and consoles and file
    # transfers follow per-VM ownership (an operator could only look at them).
    e2e_server.manager.users.create(username, PASSWORD, "admin")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(
            base_url=e2e_server.url, viewport={"width": 1280, "height": 900}
        )
        pg = context.new_page()
        pg.dialogs: list[str] = []  # type: ignore[attr-defined]
        pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
        pg.goto("/login")
        pg.fill("input[name=username]", username)
        pg.fill("input[name=password]", PASSWORD)
        pg.click("button[type=submit]")
        pg.wait_for_url(re.compile(r".*/$"))
        yield pg
        browser.close()


def test_guest_agent_facts_show_the_real_hostname(page: Any, fleet: Fleet) -> None:
    g = fleet.agent
    page.goto(f"/vms/local/{g.name}")
    page.locator("#guest-hostname").wait_for(timeout=60_000)
    assert page.inner_text("#guest-hostname") == g.hostname
    page.click("text=Guest agent")
    page.locator("#agent-tab .badge").first.wait_for()
    assert "connected" in page.inner_text("#agent-tab")


def test_hostile_hostname_is_shown_as_text(page: Any, lab: Lab, fleet: Fleet) -> None:
    g = fleet.agent
    assert lab.api.exec(g.name, "hostname", EVIL)["exit_code"] == 0
    try:
        page.goto(f"/vms/local/{g.name}")
        page.locator("#guest-hostname").wait_for(timeout=60_000)
        assert page.inner_text("#guest-hostname") == EVIL
        assert page.locator("#guest-hostname img").count() == 0
        assert page.title() != "1" and not page.dialogs
    finally:
        lab.api.exec(g.name, "hostname", g.hostname)


def test_vnc_console_shows_the_guest_screen(page: Any, fleet: Fleet) -> None:
    page.goto(f"/vms/local/{fleet.agent.name}#console")
    page.wait_for_function(
        "() => document.getElementById('vnc-status').textContent === 'connected'",
        timeout=60_000,
    )
    lit = page.wait_for_function(
        """() => {
            const c = document.querySelector('#vnc-screen canvas');
            if (!c || !c.width || !c.height) return 0;
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 60) n++;
            return n;
        }""",
        timeout=60_000,
    ).json_value()
    assert lit > 100  # text on the guest's screen, not a black canvas


def test_serial_console_shows_the_guest_booting(page: Any, lab: Lab, fleet: Fleet) -> None:
    g = fleet.agent
    page.goto(f"/vms/local/{g.name}#console")
    page.wait_for_function(
        "() => document.getElementById('serial-status').textContent === 'connected'",
        timeout=60_000,
    )
    mark = lab.events.mark()
    assert lab.api.agent(g.name, "reboot", "POST", json={"timeout_seconds": 0})["initiated"]
    # The guest boots with `quiet`: its own init's milestones are the boot text it prints.
    page.wait_for_function(
        "() => /kvmm-e2e: /.test(document.querySelector('#serial-terminal').innerText)",
        timeout=180_000,
    )
    lab.events.wait(agent_event(g.name, "connected"), timeout=180, after=mark)
    g.wait_agent(mark)


def test_guest_file_upload_and_download_with_progress(
    page: Any, lab: Lab, fleet: Fleet, tmp_path: Any
) -> None:
    g = fleet.agent
    data = bytes(range(256)) * 4096  # 1 MiB
    src = tmp_path / "kvmm-web.bin"
    src.write_bytes(data)
    page.goto(f"/vms/local/{g.name}#agent")
    page.locator("#guest-upload").wait_for(timeout=60_000)
    page.set_input_files("#guest-upload input[type=file]", str(src))
    page.fill("#guest-upload [data-upload-name]", "/tmp/kvmm-web.bin")
    page.click("#guest-upload button.primary")
    page.wait_for_function(
        "() => document.querySelector('#guest-upload [data-upload-status]').textContent"
        " === '100% · done'",
        timeout=120_000,
    )
    page.fill("#guest-download [data-download-name]", "/tmp/kvmm-web.bin")
    with page.expect_download(timeout=120_000) as info:
        page.click("#guest-download button.primary")
    assert info.value.path().read_bytes() == data
    assert page.inner_text("#guest-download [data-download-status]") == "100% · done"


def test_vm_list_shows_addresses_with_their_source(page: Any, lab: Lab, fleet: Fleet) -> None:
    for g, source in ((fleet.agent, "agent"), (fleet.qga, "qemu-ga")):
        found = lab.api.call("GET", f"/api/hosts/local/vms/{g.name}/addresses")
        assert {"ip": f"{g.ip}/24", "source": source} in [
            {"ip": a["ip"], "source": a["source"]} for a in found
        ], found
    page.goto("/vms?q=" + lab.name(""))
    row = page.locator("tr", has_text=fleet.agent.name)
    # A live update re-renders the row, and its addresses cell loads again after it:
    # the retrying assertion follows the cell through that, a one-shot read does not.
    cell = row.locator("td[data-label=Addresses]")
    expect(cell).to_contain_text(fleet.agent.ip, timeout=60_000)
    expect(cell.locator(".badge").first).to_be_visible()
