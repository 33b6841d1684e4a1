"""The create flow's install sources in a real browser (Debian's Chromium through
Playwright) on libvirt's test driver: each source is its own choice, a bad choice is
named beside its field, the review step names the source, and what is defined is what
was chosen (read back from libvirt: boot order, disks, no copy for an imported disk).
Uploading an ISO from the create page: test_newcomer_browser.py (qemu:///system)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import libvirt
import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.create_steps import step, submit
from tests.kvmmanager.web.shots import shot

from kvmmanager.services.storage.xml import build_volume_xml
from kvmmanager.virt.xml.domain import Domain

pytestmark = pytest.mark.browser
POOL = "default-pool"
PREFIX = "kvmm-t-src-"
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


def make_volume(name: str, gib: float = 1, fmt: str = "qcow2") -> str:
    conn = libvirt.open("test:///default")
    try:
        pool = conn.storagePoolLookupByName(POOL)
        return str(pool.createXML(build_volume_xml(name, int(gib * 1024**3), fmt), 0).path())
    finally:
        conn.close()


def defined(name: str) -> Domain:
    conn = libvirt.open("test:///default")
    try:
        return Domain.from_xml(conn.lookupByName(name).XMLDesc(0))
    finally:
        conn.close()


def volume_names() -> set[str]:
    conn = libvirt.open("test:///default")
    try:
        return set(conn.storagePoolLookupByName(POOL).listVolumes())
    finally:
        conn.close()


def open_source_step(page: Any, name: str, source: str) -> Any:
    """The create page with `name` typed and `source` picked (step 3); the form."""
    page.goto("/vms/new")
    form = page.locator("form#new-vm")
    form.locator("input[name=name]").fill(name)
    step(page, 3)
    form.locator(f"input[name=source][value={source}]").check()
    step(page, 4)
    form.locator("input[name=install_agent]").uncheck()
    step(page, 3)
    return form


def test_pxe_boots_the_network_first_needs_a_nic_and_gets_a_blank_disk(
    browser_login: Any, tag: str
) -> None:
    page = browser_login("operator")
    name = f"{PREFIX}{tag}-pxe"
    form = open_source_step(page, name, "pxe")
    form.locator("select[name=network]").select_option("")
    form.locator("input[name=disk_gib]").fill("2")
    submit(page)
    # No NIC: refused beside the network field, in the form's words; nothing made.
    error = page.locator("#err-network")
    expect(error).to_contain_text("PXE", timeout=WAIT)
    expect(error).to_contain_text("network")
    expect(page.locator("form#new-vm [data-step='3']")).to_be_visible()
    shot(page, "create-pxe-needs-a-nic")
    assert f"{name}.qcow2" not in volume_names()
    page.locator("form#new-vm select[name=network]").select_option("default")
    step(page, 4)
    expect(page.locator("#review")).to_contain_text("PXE network boot")
    shot(page, "create-pxe-review")
    submit(page)
    expect(page).to_have_url(re.compile(rf"/vms/local/{name}$"), timeout=WAIT)
    dom = defined(name)
    assert [i.boot_order for i in dom.devices.interfaces] == [1]
    assert [i.source_network for i in dom.devices.interfaces] == ["default"]
    disks = [d for d in dom.devices.disks if d.device == "disk"]
    assert [d.source_path.rsplit("/", 1)[-1] for d in disks] == [f"{name}.qcow2"]


def test_import_uses_the_volume_itself_and_refuses_one_another_vm_uses(
    browser_login: Any, live_server: Any, tag: str
) -> None:
    used = f"{PREFIX}{tag}-used.qcow2"
    free = f"{PREFIX}{tag}-free.qcow2"
    free_path = make_volume(free)
    make_volume(used)
    owner = f"{PREFIX}{tag}-owner"
    with httpx.Client(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {live_server.token}"},
        timeout=60,
    ) as c:
        r = c.post(
            "/api/hosts/local/vms",
            json={"name": owner, "memory_mib": 64, "disks": [{"pool": POOL, "volume": used}]},
        )
        assert r.status_code in (200, 201, 202), r.text
    page = browser_login("admin")
    name = f"{PREFIX}{tag}-imp"
    form = open_source_step(page, name, "import")
    option = form.locator(f"select[name=import_volume] option[value='{POOL}/{used}']")
    expect(option).to_be_disabled()
    expect(option).to_have_text(f"{POOL}/{used} (in use by vm {owner})")
    # A page opened before the volume was taken still offers it: the server refuses it.
    option.evaluate("o => { o.disabled = false; }")
    form.locator("select[name=import_volume]").select_option(f"{POOL}/{used}")
    form.locator("input[name=disk_gib]").fill("0")
    submit(page)
    error = page.locator("#err-source")
    expect(error).to_contain_text(owner, timeout=WAIT)
    expect(page.locator("form#new-vm [data-step='3']")).to_be_visible()
    shot(page, "create-import-refused-in-use")
    form = page.locator("form#new-vm")
    form.locator("select[name=import_volume]").select_option(f"{POOL}/{free}")
    step(page, 4)
    expect(page.locator("#review")).to_contain_text("Import an existing disk")
    expect(page.locator("#review")).to_contain_text(free)
    before = volume_names()
    submit(page)
    expect(page).to_have_url(re.compile(rf"/vms/local/{name}$"), timeout=WAIT)
    disks = [d for d in defined(name).devices.disks if d.device == "disk"]
    assert [d.source_path for d in disks] == [free_path]  # the volume itself: no copy
    assert volume_names() == before


def test_cloud_image_as_a_full_clone_without_a_seed_at_the_chosen_size(
    browser_login: Any, tag: str
) -> None:
    image = f"{PREFIX}{tag}-cloud.qcow2"
    make_volume(image, 1)
    page = browser_login("admin")
    name = f"{PREFIX}{tag}-cl"
    form = open_source_step(page, name, "cloud")
    form.locator("select[name=cloud_image]").select_option(f"{POOL}/{image}")
    form.locator("input[name=cloud_mode][value=full]").check()
    form.locator("input[name=cloud_seed]").uncheck()
    form.locator("input[name=disk_gib]").fill("3")
    step(page, 4)
    review = page.locator("#review")
    expect(review).to_contain_text("Cloud image")
    expect(review).to_contain_text(image)
    expect(review).to_contain_text("full clone")
    expect(review).to_contain_text("no cloud-init seed")
    shot(page, "create-cloud-review")
    submit(page)
    expect(page).to_have_url(re.compile(rf"/vms/local/{name}$"), timeout=WAIT)
    expect(page.locator("#toasts")).to_contain_text(f"Created {name} from {image}")
    dom = defined(name)
    disks = [d for d in dom.devices.disks if d.device == "disk"]
    assert [d.source_path.rsplit("/", 1)[-1] for d in disks] == [f"{name}-disk0.qcow2"]
    cdroms = [d for d in dom.devices.disks if d.device == "cdrom"]
    assert all(not d.source_path for d in cdroms), "no seed asked for, none attached"
    assert f"{name}-seed.iso" not in volume_names()
    conn = libvirt.open("test:///default")
    try:
        vol = conn.storagePoolLookupByName(POOL).storageVolLookupByName(f"{name}-disk0.qcow2")
        assert vol.info()[1] == 3 * 1024**3
    finally:
        conn.close()


def test_each_source_is_a_choice_and_the_iso_list_holds_only_isos(
    browser_login: Any, tag: str
) -> None:
    make_volume(f"{PREFIX}{tag}-disk.qcow2")
    make_volume(f"{PREFIX}{tag}-setup.iso", 0.01, "raw")
    page = browser_login("operator")
    page.goto("/vms/new")
    step(page, 3)
    radios = page.locator("form#new-vm input[name=source]")
    assert sorted(radios.evaluate_all("rs => rs.map(r => r.value)")) == sorted(
        ["iso", "upload", "cloud", "import", "pxe", "blank"]
    )
    isos = page.locator("#iso-select option").all_inner_texts()
    assert f"{PREFIX}{tag}-setup.iso" in isos and f"{PREFIX}{tag}-disk.qcow2" not in isos
    # "Upload an ISO" takes the user to the upload form beside the steps.
    page.locator("form#new-vm input[name=source][value=upload]").check()
    expect(page.locator("#iso-upload input[type=file]")).to_be_focused()
    shot(page, "create-sources")


def test_the_forms_own_requests_log_no_script_errors(browser_login: Any) -> None:
    """The OS search and the ISO list reload are requests of inputs inside the create
    form: they must not inherit the form's busy-state selectors, which find nothing from
    an input (htmx logged "The selector ... returned no matches!" on every search)."""
    page = browser_login("operator")
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto("/vms/new")
    with page.expect_response(lambda r: "/vms/new/os" in r.url):
        page.locator("form#new-vm input[name=os_query]").fill("debian")
    expect(page.locator("#os-results button").first).to_be_visible(timeout=WAIT)
    page.evaluate("() => htmx.trigger(document.body, 'kvmm-uploaded')")  # as after an upload
    page.wait_for_load_state("networkidle")
    assert [e for e in errors if "selector" in e] == [], errors


def test_a_refused_upload_says_why_beside_the_form(
    browser_login: Any, tag: str, tmp_path: Any
) -> None:
    """An ISO whose name is taken in the pool: the upload's status line says why (it said
    only "failed", the reason in a toast that goes away)."""
    name = f"{PREFIX}{tag}-taken.iso"
    make_volume(name, 0.01, "raw")
    iso = tmp_path / name
    iso.write_bytes(b"\0" * 4096)
    page = browser_login("operator")
    page.goto("/vms/new")
    page.select_option("#iso-upload select[name=pool]", POOL)
    page.set_input_files("#iso-upload input[type=file]", str(iso))
    page.click("#iso-upload button.primary")
    status = page.locator("#iso-upload [data-upload-status]")
    expect(status).to_contain_text("failed: ", timeout=WAIT)
    expect(status).to_contain_text("exists")
    shot(page, "create-upload-refused")


def test_cloud_init_fields_show_only_for_a_cloud_image(browser_login: Any) -> None:
    """Step 3 shows the cloud-init and agent-permission fields, and the overlay/clone
    choice, only while "Cloud image" is the source (they were always there, for an ISO
    too, where they do nothing)."""
    page = browser_login("operator")
    page.goto("/vms/new")
    step(page, 3)
    form = page.locator("form#new-vm")
    cloud_only = [
        form.locator("fieldset", has_text="Cloud-init (cloud image only)"),
        form.locator("fieldset", has_text="Agent permissions (cloud image only)"),
        form.locator("[role=group][aria-label='Cloud image disk']"),
    ]
    form.locator("input[name=source][value=iso]").check()
    for part in cloud_only:
        expect(part).to_be_hidden()
    form.locator("input[name=source][value=cloud]").check()
    for part in cloud_only:
        expect(part).to_be_visible()
    shot(page, "create-cloud-fields")
    form.locator("input[name=source][value=pxe]").check()
    expect(cloud_only[0]).to_be_hidden()
