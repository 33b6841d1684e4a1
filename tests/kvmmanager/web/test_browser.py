"""The UI in a real browser (Debian's Chromium through Playwright), against a live server
on libvirt's test driver, plus one real libvirtd pool for the upload test."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.create_steps import step, submit
from tests.kvmmanager.web.live_api import api_client

pytestmark = pytest.mark.browser

SHOTS = os.environ.get("KVMM_SCREENSHOTS")


def shot(page, name: str) -> None:
    """Screenshots for the README, when KVMM_SCREENSHOTS names a directory."""
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def wait_connected(c: httpx.Client, host: str) -> None:
    deadline = time.monotonic() + 60
    while c.get(f"/api/hosts/{host}").json().get("status") != "connected":
        assert time.monotonic() < deadline, f"host {host} did not connect"
        time.sleep(0.1)


def test_login_logout_and_wrong_password(chromium, live_server, browser_login) -> None:
    context = chromium.new_context(base_url=live_server.url)
    page = context.new_page()
    page.goto("/vms")
    expect(page).to_have_url(re.compile(r"/login\?next=/vms"))
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    expect(page.locator("[role=alert]")).to_be_visible()
    context.close()

    page = browser_login("admin")
    expect(page.locator(".topbar")).to_contain_text(page.username)
    shot(page, "dashboard")
    page.click("text=Log out")
    expect(page).to_have_url(re.compile(r"/login"))
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))


def test_viewer_sees_no_buttons_it_cannot_use(browser_login) -> None:
    page = browser_login("viewer")
    page.goto("/vms")
    expect(page.locator("text=Create VM")).to_have_count(0)
    page.goto("/vms/local/test")
    expect(page.locator("#overview")).to_be_visible()
    expect(page.locator("#overview button")).to_have_count(0)
    expect(page.locator("nav#nav a[href='/users']")).to_have_count(0)


def test_create_in_wizard_then_state_changes_live_then_delete(browser_login, live_server) -> None:
    page = browser_login("operator")
    page.goto("/vms/new")
    page.fill("input[name=name]", "bad/name")
    step(page, 3)
    page.fill("input[name=disk_gib]", "0")
    step(page, 4)
    page.uncheck("input[name=install_agent]")
    submit(page)
    expect(page.locator("#err-name")).to_be_visible()
    page.fill("input[name=name]", "kvmm-t-web-wizard")
    step(page, 3)
    page.fill("input[name=disk_gib]", "0")
    submit(page)
    expect(page).to_have_url(re.compile(r"/vms/local/kvmm-t-web-wizard"))
    expect(page.locator("#vm-state")).to_have_text("off")
    shot(page, "vm-detail")

    page.goto("/vms")
    row = page.locator("tr", has_text="kvmm-t-web-wizard")
    expect(row.locator("[data-state]")).to_have_text("off")
    # The event stream is subscribed (app.js marks the page once the server has it).
    page.wait_for_function("() => document.documentElement.dataset.live === 'open'")
    # Someone else (the REST API) starts it: the open page follows libvirt's event.
    with api_client(live_server) as c:
        r = c.post("/api/hosts/local/vms/kvmm-t-web-wizard/actions/start")
        assert r.status_code == 200, r.text
    expect(row.locator("[data-state]")).to_have_text("running", timeout=15_000)
    shot(page, "vm-list")

    page.goto("/vms/local/kvmm-t-web-wizard")
    page.once("dialog", lambda d: d.accept())
    page.click("#overview button:text('Force off')")
    expect(page.locator("#vm-state")).to_have_text("off")
    page.once("dialog", lambda d: d.accept())
    page.click("button:text('Delete VM')")
    expect(page).to_have_url(re.compile(r"/vms$"))
    expect(page.locator("tr", has_text="kvmm-t-web-wizard")).to_have_count(0)


def test_phone_width_menu_and_table(browser_login) -> None:
    page = browser_login("admin", viewport={"width": 390, "height": 800})
    page.goto("/vms")
    expect(page.locator("nav#nav")).to_be_hidden()
    page.click(".menu-toggle")
    expect(page.locator("nav#nav")).to_be_visible()
    expect(page.locator("td[data-label=Name]").first).to_be_visible()


@pytest.mark.libvirtd
def test_upload_shows_progress_to_100_percent(browser_login, live_server, tmp_path) -> None:
    pool_dir = Path("/var/tmp") / f"kvmm-t-web-pool-{os.getpid()}"
    with api_client(live_server) as c:
        r = c.post("/api/hosts", json={"name": "real", "uri": "qemu:///system"})
        assert r.status_code in (200, 201), r.text
        live_server.manager.registry.get("real")  # added; now wait until it answers
        wait_connected(c, "real")
        r = c.post(
            "/api/hosts/real/pools",
            json={
                "name": "kvmm-t-web-pool",
                "type": "dir",
                "target": str(pool_dir),
                "build": True,
                "start": True,
                "autostart": False,
            },
        )
        assert r.status_code in (200, 201), r.text
    try:
        iso = tmp_path / "kvmm-t-web.iso"
        iso.write_bytes(os.urandom(4 * 1024 * 1024))
        page = browser_login("operator")
        page.goto("/storage/real/kvmm-t-web-pool")
        page.set_input_files("form#upload input[type=file]", str(iso))
        page.click("form#upload button.primary")
        expect(page.locator("[data-upload-status]")).to_have_text("100% · done", timeout=60_000)
        assert page.eval_on_selector("form#upload progress", "p => p.value === p.max")
        expect(page.locator("#volumes")).to_contain_text("kvmm-t-web.iso")
        shot(page, "storage")

        # The server holds an upload to its declared format: the page declares the one
        # the file name says unless the Format field names another.
        image = tmp_path / "kvmm-t-web.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"], check=True)
        page.set_input_files("form#upload input[type=file]", str(image))
        page.click("form#upload button.primary")
        expect(page.locator("[data-upload-status]")).to_have_text("100% · done", timeout=60_000)
        expect(page.locator("#volumes")).to_contain_text("kvmm-t-web.qcow2")
        page.fill("form#upload [data-upload-name]", "kvmm-t-web-as-raw")
        page.select_option("form#upload [data-upload-format]", "raw")
        page.click("form#upload button.primary")
        status = page.locator("[data-upload-status]")
        expect(status).to_contain_text("failed: ", timeout=60_000)
        expect(status).to_contain_text("format=qcow2")
        expect(page.locator(".toast").last).to_contain_text("format=qcow2")
    finally:
        with api_client(live_server) as c:
            c.delete("/api/hosts/real/pools/kvmm-t-web-pool", params={"delete_volumes": True})


def test_a_live_row_update_keeps_showing_the_addresses(browser_login, live_server) -> None:
    """A live update re-renders the VM's row, whose addresses load again (lazily): the row
    shows the addresses it had meanwhile, never the "…" placeholder. The test driver's
    `test` domain has a DHCP lease address."""
    with api_client(live_server) as c:
        vm = c.get("/api/hosts/local/vms/test").json()
    row_id = f"vm-local-{vm['uuid']}"
    page = browser_login("operator")
    page.goto("/vms")
    cell = page.locator(f"#{row_id} td[data-label=Addresses]")
    expect(cell).to_contain_text("192.168.122.3")
    page.wait_for_function("() => document.documentElement.dataset.live === 'open'")
    # Every text the cell shows from now on, and a mark that goes away with the old row.
    page.evaluate(
        """(id) => {
            window.kvmmSeen = [];
            const row = document.getElementById(id);
            row.dataset.old = "1";
            new MutationObserver(() => {
                const cells = "#" + CSS.escape(id) + " td[data-label=Addresses]";
                const cell = document.querySelector(cells);
                if (cell) window.kvmmSeen.push(cell.textContent.trim());
            }).observe(row.parentElement, {childList: true, subtree: true, characterData: true});
        }""",
        row_id,
    )
    try:
        with api_client(live_server) as c:
            r = c.patch("/api/hosts/local/vms/test", json={"description": "kvmm-t-web addresses"})
            assert r.status_code == 200, r.text
        page.wait_for_function("(id) => !document.getElementById(id).dataset.old", arg=row_id)
        expect(cell.locator("[hx-get]")).to_have_count(0)  # the fresh answer is in
        expect(cell).to_contain_text("192.168.122.3")
        seen = page.evaluate("window.kvmmSeen")
        assert seen and all("192.168.122.3" in text for text in seen), seen
    finally:
        with api_client(live_server) as c:
            c.patch("/api/hosts/local/vms/test", json={"description": vm.get("description") or ""})


def test_api_docs_page_works_offline(chromium, live_server) -> None:
    """Issue 17 item 15: Swagger UI came from a CDN (and its inline script broke the CSP);
    the spec was not at /openapi.json. Every request the page makes stays on the server."""
    spec = httpx.get(f"{live_server.url}/openapi.json", timeout=60).json()
    assert spec["info"]["title"] == "KVM Manager"
    context = chromium.new_context(base_url=live_server.url)
    page = context.new_page()
    elsewhere: list[str] = []
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    def only_here(route) -> None:
        if route.request.url.startswith(live_server.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_here)
    page.goto("/api/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("KVM Manager")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    context.close()
    assert elsewhere == [] and errors == []
