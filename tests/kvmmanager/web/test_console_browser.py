"""The Console tab in Chromium against a real TCG guest on qemu:///system: what a person
sees. The guest is the e2e suite's kernel + initramfs (tests/e2e/guest), booted with its
kernel console on the screen AND the first serial port, so both consoles have text.

One guest and one manager serve the whole module (booting is the expensive part)."""

from __future__ import annotations

import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import libvirt
import pytest
from playwright.sync_api import expect
from tests.e2e.guest.build import build_guest
from tests.kvmmanager.web.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.kvmmanager.web.shots import shot

from kvmmanager.core.config import get_settings

pytestmark = [pytest.mark.browser, pytest.mark.libvirtd, pytest.mark.vm]
URI = "qemu:///system"
PASSWORD = "kvmm-t-webcon-password"
TIMEOUT = 120_000  # ms: a TCG boot on a loaded 2-core machine


@dataclass(frozen=True)
class Real:
    url: str
    token: str
    app: Any
    vm: str

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=120
        )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _remove_domain(name: str) -> None:
    conn = libvirt.open(URI)
    try:
        dom = conn.lookupByName(name)
        if dom.isActive():
            dom.destroy()
        dom.undefine()
    except libvirt.libvirtError:
        pass
    finally:
        conn.close()


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Real]:
    """A manager on qemu:///system under uvicorn, and a defined (shut off) guest."""
    import uvicorn

    from kvmmanager.web.app import create_app

    image = build_guest()
    base = tmp_path_factory.mktemp("webcon")
    mp = pytest.MonkeyPatch()
    mp.setenv("KVMM_CONFIG", str(base / "no-config.toml"))
    mp.setenv("KVMM_DATA_DIR", str(base / "data"))
    mp.setenv("KVMM_LIBVIRT__DEFAULT_URI", URI)
    mp.setenv("KVMM_METRICS__INTERVAL_SECONDS", "1")
    mp.setenv("XDG_CONFIG_HOME", str(base / "xdg"))
    for var in ("KVMM_URL", "KVMM_TOKEN", "KVMM_DATABASE__URL"):
        mp.delenv(var, raising=False)
    get_settings.cache_clear()
    settings = get_settings()
    port = _free_port()
    settings.server.port = port
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="kvmm-t-webcon", daemon=True)
    thread.start()
    name = f"kvmm-t-webcon-{secrets.token_hex(3)}"
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        _, token = app.state.manager.users.create_token("admin", "kvmm-t-webcon")
        host = app.state.manager.registry.get("local")
        while not host.connected:
            assert time.monotonic() < deadline + 60, host.status_reason
            time.sleep(0.05)
        real = Real(url=f"http://127.0.0.1:{port}", token=token, app=app, vm=name)
        spec = {
            "name": name,
            "vcpus": 1,
            "memory_mib": 256,
            "install": {
                "kind": "kernel",
                "kernel": str(image.kernel),
                "initrd": str(image.initrd),
                # The kernel's messages on the screen (tty0) and the serial port; the
                # last console= is /dev/console, where the guest's init writes.
                "cmdline": "console=tty0 console=ttyS0 kvmm.mode=none",
            },
            "start": False,
        }
        with real.api() as c:
            r = c.post("/api/hosts/local/vms", json=spec)
            assert r.status_code in (200, 201, 202), r.text
        yield real
    finally:
        _remove_domain(name)
        server.should_exit = True
        thread.join(timeout=60)
        mp.undo()
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def page(real: Real) -> Iterator[Any]:
    assert shutil.which(CHROMIUM), "scripts/setup --dev installs Debian's chromium"
    from playwright.sync_api import sync_playwright

    username = f"kvmm-t-webcon-{secrets.token_hex(2)}"
    # An admin: the guest belongs to the API token's admin, and consoles follow per-VM
    # ownership (an operator could only look at it).
    real.app.state.manager.users.create(username, PASSWORD, "admin")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=real.url, viewport={"width": 1280, "height": 900})
        pg = context.new_page()
        pg.goto("/login")
        pg.fill("input[name=username]", username)
        pg.fill("input[name=password]", PASSWORD)
        pg.click("button[type=submit]")
        pg.wait_for_url(re.compile(r".*/$"))
        yield pg
        browser.close()


# Painted pixels of the noVNC canvas: its shown size, its container's, and how many
# pixels differ from the top-left one (a black screen, or none at all, has 0).
CANVAS = """() => {
    const box = document.getElementById('vnc-screen').getBoundingClientRect();
    const c = document.querySelector('#vnc-screen canvas');
    if (!c) return null;
    const r = c.getBoundingClientRect();
    let differing = 0;
    if (c.width && c.height) {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        for (let i = 4; i < d.length; i += 4)
            if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2]) differing++;
    }
    return {box: [box.width, box.height], shown: [r.width, r.height], differing};
}"""


def test_console_follows_the_start_and_shows_the_guest_screen(page: Any, real: Real) -> None:
    page.goto(f"/vms/local/{real.vm}#console")
    expect(page.locator("text=Start the VM to use its consoles")).to_be_visible()
    page.wait_for_function("() => document.documentElement.dataset.live === 'open'")
    shot(page, "console-vm-off")
    with real.api() as c:
        r = c.post(f"/api/hosts/local/vms/{real.vm}/actions/start")
        assert r.status_code == 200, r.text
    # No reload: the tab follows the VM's state and connects both consoles.
    expect(page.locator("text=Start the VM to use its consoles")).to_be_hidden(timeout=30_000)
    expect(page.locator("#vnc-status")).to_have_text("connected", timeout=60_000)
    expect(page.locator("#serial-status")).to_have_text("connected", timeout=60_000)
    # The kernel's boot text on the serial console, then the guest's own init, to its end
    # (from then on the guest writes nothing).
    terminal = page.locator("#serial-terminal")
    expect(terminal).to_contain_text("Run /init as init process", timeout=TIMEOUT)
    expect(terminal).to_contain_text("kvmm-e2e: init done", timeout=TIMEOUT)
    expect(page.locator("#serial-hint")).to_be_hidden()
    shot(page, "console-booting")


def test_vnc_screen_fills_its_container_and_shows_the_guest(page: Any, real: Real) -> None:
    page.goto(f"/vms/local/{real.vm}#console")
    expect(page.locator("#vnc-status")).to_have_text("connected", timeout=60_000)
    # The screen fills its container (scaled, aspect kept) and shows the kernel's text.
    page.wait_for_function(
        f"() => {{ const s = ({CANVAS})(); return s && s.differing > 500; }}", timeout=TIMEOUT
    )
    seen = page.evaluate(CANVAS)
    (box_w, box_h), (w, h) = seen["box"], seen["shown"]
    assert box_w > 600 and box_h > 300, seen
    assert w > 0 and h > 0, seen
    # scaleViewport keeps the guest's aspect: one side fills the container.
    assert abs(w - box_w) <= 2 or abs(h - box_h) <= 2, seen
    shot(page, "console-running")


def test_vnc_screen_at_390_px_has_no_band_and_no_overflow(page: Any, real: Real) -> None:
    """On a phone the screen box takes the guest screen's proportions: it kept a fixed
    75 %-of-the-window height, so the scaled screen sat between two tall grey bands."""
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        page.goto(f"/vms/local/{real.vm}#console")
        expect(page.locator("#vnc-status")).to_have_text("connected", timeout=60_000)
        page.wait_for_function(
            f"() => {{ const s = ({CANVAS})(); return s && s.differing > 500; }}",
            timeout=TIMEOUT,
        )
        seen = page.evaluate(CANVAS)
        (box_w, box_h), (w, h) = seen["box"], seen["shown"]
        # The screen fills its box both ways: nothing of the box is left as a band.
        assert abs(w - box_w) <= 2 and abs(h - box_h) <= 2, seen
        wide = page.evaluate(
            "() => Array.from(document.querySelectorAll('body *')).filter("
            "(e) => e.getBoundingClientRect().right > 391).slice(0, 8).map("
            "(e) => e.tagName + '.' + e.className + ' ' + e.getBoundingClientRect().right)"
        )
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390, wide
        shot(page, "console-running-390")
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})


def test_serial_console_says_why_it_is_blank(page: Any, real: Real) -> None:
    """A VM with no OS (SeaBIOS finds nothing to boot) writes nothing to its serial
    port: the blank terminal comes with a hint saying why and what to do."""
    name = f"{real.vm}-blank"
    try:
        with real.api() as c:
            r = c.post(
                "/api/hosts/local/vms",
                json={"name": name, "memory_mib": 64, "install": {"kind": "blank"}, "start": True},
            )
            assert r.status_code in (200, 201, 202), r.text
        page.goto(f"/vms/local/{name}#console")
        expect(page.locator("#serial-status")).to_have_text("connected", timeout=60_000)
        hint = page.locator("#serial-hint")
        expect(hint).to_be_visible()
        expect(hint).to_contain_text("console=ttyS0")
        shot(page, "console-serial-blank")
    finally:
        _remove_domain(name)


def test_a_shutdown_the_guest_ignores_says_so_and_offers_force_off(
    page: Any, real: Real, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VM with no OS (SeaBIOS finds nothing to boot) ignores the ACPI power button: the
    Shut down request was answered "requested" and the VM silently kept running. After
    the grace time the page says the guest did not react, why, and offers Force off."""
    from kvmmanager.web.routes import vms as vm_pages

    monkeypatch.setattr(vm_pages, "SHUTDOWN_GRACE_SECONDS", 3)
    name = f"{real.vm}-acpi"
    try:
        with real.api() as c:
            r = c.post(
                "/api/hosts/local/vms",
                json={"name": name, "memory_mib": 64, "install": {"kind": "blank"}, "start": True},
            )
            assert r.status_code in (200, 201, 202), r.text
        page.goto(f"/vms/local/{name}")
        state = page.locator("#vm-state")
        expect(state).to_have_text("running", timeout=60_000)
        hint = page.locator("#shutdown-hint")
        expect(hint).to_be_hidden()
        page.click("#overview button:text-is('Shut down')")
        expect(hint).to_be_visible(timeout=60_000)
        expect(hint).to_contain_text("did not react")
        expect(hint).to_contain_text("ACPI")
        expect(state).to_have_text("running")
        shot(page, "vm-shutdown-ignored")
        page.once("dialog", lambda d: d.accept())
        hint.locator("button:text-is('Force off')").click()
        expect(state).to_have_text("off", timeout=60_000)
        expect(hint).to_be_hidden()
    finally:
        _remove_domain(name)


def test_send_keys_reach_the_guest(page: Any, real: Real) -> None:
    """Ctrl+Alt+Del from the menu (a browser keeps that combination for itself): the
    guest's kernel restarts, and says so on the serial console."""
    page.goto(f"/vms/local/{real.vm}#console")
    expect(page.locator("#serial-status")).to_have_text("connected", timeout=60_000)
    page.select_option("#send-keys-combo", "Ctrl+Alt+Del")
    page.click("#send-keys button[type=submit]")
    expect(page.locator("#toasts")).to_contain_text("Sent Ctrl+Alt+Del")
    # The kernel restarts at once; the terminal shows it until the next boot's text
    # scrolls it away, so watch every frame.
    page.wait_for_function(
        "() => /reboot: Restarting system/.test("
        "document.getElementById('serial-terminal').innerText)",
        polling="raf",
        timeout=TIMEOUT,
    )


def test_performance_graphs_draw_the_running_guest(page: Any, real: Real) -> None:
    """Every graph of the Performance tab draws lines from the guest's first samples
    (CPU and memory too, which libvirt's test driver does not report)."""
    from tests.kvmmanager.web.test_metrics_web import DRAWN

    page.goto(f"/vms/local/{real.vm}")
    page.click("nav.tabs a[data-tab=performance]")
    expect(page.locator("[data-graph] .uplot")).to_have_count(5, timeout=60_000)
    expect(page.locator("[data-graph-status]")).to_have_text("live", timeout=60_000)
    page.wait_for_function(
        f"() => Object.values(({DRAWN})()).every((n) => n > 20)", timeout=TIMEOUT
    )
    shot(page, "vm-performance-running")


def test_next_boot_changes_show_beside_the_live_values(page: Any, real: Real) -> None:
    """The running guest has 1 vCPU at most: 2 can only apply at its next boot, and the
    Hardware and Overview tabs say so (not just a toast that disappears)."""
    page.goto(f"/vms/local/{real.vm}#hardware")
    form = page.locator("#hardware form").first
    form.locator("input[name=vcpus]").fill("2")
    form.locator("button.primary").click()
    pending = page.locator("#hardware [data-pending]")
    expect(pending).to_contain_text("vCPUs 1 → 2")
    expect(pending).to_contain_text("Shut the VM down")
    expect(form.locator("input[name=vcpus]")).to_have_value("2")
    page.click("nav.tabs a[data-tab=overview]")
    page.reload()
    expect(page.locator("#overview [data-pending]")).to_contain_text("vCPUs 1 → 2")
    shot(page, "vm-pending-changes")


def test_console_follows_the_stop(page: Any, real: Real) -> None:
    page.goto(f"/vms/local/{real.vm}#console")
    expect(page.locator("#vnc-status")).to_have_text("connected", timeout=60_000)
    page.wait_for_function("() => document.documentElement.dataset.live === 'open'")
    with real.api() as c:
        r = c.post(f"/api/hosts/local/vms/{real.vm}/actions/destroy")
        assert r.status_code == 200, r.text
    expect(page.locator("text=Start the VM to use its consoles")).to_be_visible(timeout=30_000)
    expect(page.locator("#vnc-screen")).to_be_hidden()
    # Shut off, the VM's next boot is its configuration: nothing is pending any more.
    expect(page.locator("#overview [data-pending]")).to_have_count(0)
