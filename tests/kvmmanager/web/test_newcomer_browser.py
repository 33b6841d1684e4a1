"""What a newcomer tried in Chromium and the page got wrong (issue 15), on libvirt's test
driver: every check is of what the person sees (a message beside the field they typed,
a toast after the redirect, the rows a filter promises)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.create_steps import step, submit
from tests.kvmmanager.web.live_api import api_client
from tests.kvmmanager.web.shots import shot

pytestmark = pytest.mark.browser
PREFIX = "kvmm-t-newc-"
# ms: libvirt storage calls on qemu:///system on a loaded shared machine (bounded waits)
SLOW = 30_000


def test_isolated_network_is_created_from_the_form(browser_login: Any) -> None:
    page = browser_login("admin")
    page.goto("/networks")
    page.fill("input[name=name]", f"{PREFIX}iso")
    page.select_option("select[name=forward]", label="Isolated")
    page.fill("input[name=address]", "192.168.213.1")
    page.click("text=Create network")
    row = page.locator("tr", has_text=f"{PREFIX}iso")
    expect(row.locator("td[data-label=Mode]")).to_have_text("isolated")
    expect(page.locator("[role=alert]")).to_have_count(0)
    shot(page, "networks-isolated-created")


def open_create(page: Any, name: str, disk_gib: str, **resources: str) -> None:
    """The create page with `name` (step 1), `resources` (step 2: memory_mib=...), a
    blank install source and a `disk_gib` disk (step 3) filled in."""
    page.goto("/vms/new")
    page.fill("input[name=name]", name)
    step(page, 2)
    for field, value in resources.items():
        page.fill(f"input[name={field}]", value)
    step(page, 3)
    page.check("input[name=source][value=blank]")
    page.fill("input[name=disk_gib]", disk_gib)
    step(page, 4)


def test_create_names_a_too_large_disk_beside_its_field(browser_login: Any) -> None:
    page = browser_login("operator")
    open_create(page, f"{PREFIX}big", "999999")
    page.uncheck("input[name=install_agent]")
    submit(page)
    error = page.locator("#err-disk_gib")
    expect(error).to_be_visible()
    expect(error).to_contain_text("New disk (GiB)")
    expect(error).not_to_contain_text("size_gib")
    # What the user unticked stays unticked.
    expect(page.locator("input[name=install_agent]")).not_to_be_checked()
    shot(page, "create-error-disk-too-large")


def test_create_explains_a_name_too_long_for_its_disk_volume(browser_login: Any) -> None:
    page = browser_login("operator")
    open_create(page, "k" * 64, "1")
    page.uncheck("input[name=install_agent]")
    submit(page)
    expect(page.locator("#err-name")).to_contain_text("too long for a VM with a new disk")
    expect(page).to_have_url(re.compile(r"/vms/new"))


def test_create_names_the_character_a_vm_name_may_not_hold(browser_login: Any) -> None:
    page = browser_login("operator")
    open_create(page, "<script>alert(1)</script>", "0")
    submit(page)
    error = page.locator("#err-name")
    expect(error).to_contain_text("'<' is not allowed")
    expect(error).not_to_contain_text("'/'")
    # And it stays checked when the user left it checked.
    expect(page.locator("input[name=install_agent]")).to_be_checked()


def test_create_accepts_any_whole_mib_and_shows_its_toasts_after_the_redirect(
    browser_login: Any,
) -> None:
    """1000 MiB is no browser error; one double-click creates one VM; the "Created" toast
    and the agent's warning (no agent ISO on this host) are shown on the VM's page."""
    page = browser_login("operator")
    open_create(page, f"{PREFIX}mib", "0", memory_mib="1000")
    assert page.eval_on_selector("input[name=memory_mib]", "e => e.checkValidity()")
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    submit(page, double=True)
    expect(page).to_have_url(re.compile(rf"/vms/local/{PREFIX}mib$"), timeout=30_000)
    toasts = page.locator("#toasts")
    expect(toasts).to_contain_text(f"Created {PREFIX}mib")
    expect(toasts.locator(".toast.warn")).to_contain_text("guest agent not attached")
    assert [u for u in posts if u.endswith("/vms/new")] == [posts[0]], posts
    shot(page, "create-done-toasts")
    # Shown once: the next page has no leftover toast.
    page.reload()
    expect(page.locator("#toasts .toast")).to_have_count(0)


def test_the_vm_list_keeps_its_filter_through_a_live_refresh(
    browser_login: Any, live_server: Any
) -> None:
    page = browser_login("operator")
    page.goto("/vms")
    page.wait_for_function("() => document.documentElement.dataset.live === 'open'")
    with page.expect_response(lambda r: "/vms?" in r.url and "q=test" in r.url):
        page.fill("input[name=q]", "test")
    rows = page.locator("#vm-rows tr")
    expect(rows).to_have_count(1)
    # Another user adds a VM: the live list refreshes, with the filter the box shows.
    refreshed = lambda r: r.request.headers.get("hx-trigger") == "vm-rows"  # noqa: E731
    with page.expect_response(refreshed), api_client(live_server) as c:
        r = c.post("/api/hosts/local/vms", json={"name": f"{PREFIX}other", "memory_mib": 64})
        assert r.status_code in (200, 201, 202), r.text
    expect(page.locator("input[name=q]")).to_have_value("test")
    expect(rows).to_have_count(1)
    expect(page.locator("#vm-rows")).not_to_contain_text(f"{PREFIX}other")
    shot(page, "vm-list-filtered")


def accept_dialogs(page: Any) -> None:
    page.on("dialog", lambda d: d.accept())


@pytest.fixture
def real_host(live_server: Any) -> Iterator[str]:
    """The live server's second host, "real": qemu:///system (the test driver resizes no
    volume and uploads nothing). Pools made on it are named PREFIX..."""
    with api_client(live_server) as c:
        r = c.post("/api/hosts", json={"name": "real", "uri": "qemu:///system"})
        assert r.status_code in (200, 201), r.text
        deadline = time.monotonic() + 60
        while c.get("/api/hosts/real").json().get("status") != "connected":
            assert time.monotonic() < deadline, "host real did not connect"
            time.sleep(0.1)
    pool = f"{PREFIX}pool-{os.getpid()}"
    yield pool
    with api_client(live_server) as c:  # whatever a failed test left
        c.delete(f"/api/hosts/real/pools/{pool}", params={"delete_volumes": True})


@pytest.mark.libvirtd
def test_storage_from_zero_pool_and_volumes_in_the_ui(
    browser_login: Any, real_host: str, tmp_path: Any
) -> None:
    """Create a dir pool, then a volume; resize, copy and delete it; upload an ISO from
    the create form and pick it there without a reload; delete the pool: every step from
    the pages, each with its toast."""
    page = browser_login("admin")
    accept_dialogs(page)
    pool = real_host
    page.goto("/storage?host=real")
    form = page.locator("#pool-create form")
    form.locator("input[name=name]").fill(pool)
    form.locator("input[name=target]").fill(f"/var/tmp/{pool}")
    form.locator("button.primary").click()
    expect(page).to_have_url(re.compile(rf"/storage/real/{pool}$"), timeout=30_000)
    page.wait_for_load_state()
    expect(page.locator("#toasts")).to_contain_text(f"Created pool {pool}", timeout=SLOW)
    create = page.locator("#volume-create")
    create.locator("input[name=name]").fill(f"{PREFIX}data.qcow2")
    create.locator("input[name=capacity]").fill("1G")
    create.locator("button.primary").click()
    row = page.locator("#volumes tr", has_text=f"{PREFIX}data.qcow2")
    expect(row.locator("td[data-label=Capacity]")).to_have_text("1.0 GiB", timeout=SLOW)
    row.locator("summary").click()
    row.locator("input[name=capacity]").fill("2G")
    row.locator("button:text('Resize')").click()
    expect(page.locator("#toasts")).to_contain_text("Resized", timeout=SLOW)
    expect(row.locator("td[data-label=Capacity]")).to_have_text("2.0 GiB", timeout=SLOW)
    row.locator("summary").click()
    row.locator("input[name=new_name]").fill(f"{PREFIX}copy.qcow2")
    row.locator("button:text('Copy')").click()
    copy = page.locator("#volumes tr", has_text=f"{PREFIX}copy.qcow2")
    expect(copy).to_have_count(1, timeout=60_000)
    shot(page, "storage-pool-volumes")
    copy.locator("button:text('Delete')").click()
    expect(copy).to_have_count(0, timeout=SLOW)

    iso = tmp_path / f"{PREFIX}setup.iso"
    iso.write_bytes(os.urandom(1024 * 1024))
    page.goto("/vms/new?host=real")
    page.select_option("#iso-upload select[name=pool]", pool)
    page.set_input_files("#iso-upload input[type=file]", str(iso))
    page.click("#iso-upload button.primary")
    expect(page.locator("#iso-upload [data-upload-status]")).to_have_text(
        "100% · done", timeout=SLOW
    )
    expect(page.locator("#iso-select")).to_have_value(f"{pool}/{PREFIX}setup.iso", timeout=SLOW)
    expect(page.locator("input[name=source][value=iso]")).to_be_checked(timeout=SLOW)

    page.goto("/storage?host=real")
    page.locator("tr", has_text=pool).locator("button:text('Delete')").click()
    expect(page.locator("#toasts")).to_contain_text(f"Deleted pool {pool}", timeout=SLOW)
    expect(page.locator("tr", has_text=pool)).to_have_count(0, timeout=SLOW)


def test_cd_picker_offers_only_iso_images(browser_login: Any, live_server: Any) -> None:
    with api_client(live_server) as c:
        for name, fmt in ((f"{PREFIX}disk.qcow2", "qcow2"), (f"{PREFIX}setup.iso", "raw")):
            r = c.post(
                "/api/hosts/local/pools/default-pool/volumes",
                json={"name": name, "capacity": "1M", "format": fmt},
            )
            assert r.status_code == 201, r.text
        r = c.post("/api/hosts/local/vms", json={"name": f"{PREFIX}cd", "memory_mib": 64})
        assert r.status_code in (200, 201, 202), r.text
    page = browser_login("admin")
    page.goto(f"/vms/local/{PREFIX}cd#hardware")
    options = page.locator("select[aria-label^='ISO volume'] option")
    expect(options.first).to_be_attached()
    texts = options.all_inner_texts()
    assert f"{PREFIX}setup.iso" in texts and f"{PREFIX}disk.qcow2" not in texts, texts


def test_a_deleted_vms_page_says_so_and_offers_no_start(
    browser_login: Any, live_server: Any
) -> None:
    name = f"{PREFIX}gone"
    with api_client(live_server) as c:
        r = c.post("/api/hosts/local/vms", json={"name": name, "memory_mib": 64})
        assert r.status_code in (200, 201, 202), r.text
    page = browser_login("operator")
    page.goto(f"/vms/local/{name}")
    expect(page.locator("#overview button:text('Start')")).to_be_visible()
    page.wait_for_function("() => document.documentElement.dataset.live === 'open'")
    with api_client(live_server) as c:
        assert c.delete(f"/api/hosts/local/vms/{name}").status_code in (200, 204)
    expect(page.locator("#overview")).to_contain_text("no longer exists")
    expect(page.locator("#overview button")).to_have_count(0)
    shot(page, "vm-deleted")


def test_agent_actions_are_disabled_with_the_reason(browser_login: Any) -> None:
    """The test driver's `test` VM runs without any agent."""
    page = browser_login("admin")
    page.goto("/vms/local/test#agent")
    reason = page.locator("#agent-down")
    expect(reason).to_contain_text("agent is")
    for label in ("Shut down via agent", "Reboot via agent", "Run"):
        expect(page.locator(f"#agent-tab button:text-is('{label}')")).to_be_disabled()
    shot(page, "vm-agent-absent")
