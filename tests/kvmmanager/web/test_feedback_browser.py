"""The VM page's small forms answer with a toast a person can read (issue 15): what was
done to which object, or why it failed in the form's own words. On libvirt's test
driver: a shut-off VM takes device changes (its definition is rewritten), a running
one is refused them by this driver, which gives the failures."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import libvirt
import pytest
from playwright.sync_api import expect
from tests.kvmmanager.web.create_steps import step, submit
from tests.kvmmanager.web.live_api import api_client
from tests.kvmmanager.web.shots import shot

pytestmark = pytest.mark.browser
PREFIX = "kvmm-t-fb-"
OFF, ON, ISO = f"{PREFIX}off", f"{PREFIX}on", f"{PREFIX}setup.iso"
POOL = "/api/hosts/local/pools/default-pool"
DISK = {"pool": "default-pool", "size_gib": 1}
WAIT = 30_000  # ms: bounded waits for an answer on a loaded shared machine


def remove_ours(c: httpx.Client) -> None:
    """The test driver's state lives as long as the process holds a connection to it:
    whatever these tests made (or a failed run left) goes, VMs with their volumes."""
    for vm in c.get("/api/hosts/local/vms").json():
        name = vm["name"]
        if name.startswith(PREFIX):
            c.post(f"/api/hosts/local/vms/{name}/actions/destroy")
            c.delete(f"/api/hosts/local/vms/{name}", params={"remove_volumes": True})
    c.delete(f"{POOL}/volumes/{ISO}")
    left = [vm["name"] for vm in c.get("/api/hosts/local/vms").json()]
    assert not [n for n in left if n.startswith(PREFIX)], left


@pytest.fixture
def api(live_server: Any) -> Iterator[httpx.Client]:
    with api_client(live_server) as c:
        remove_ours(c)
        yield c
        remove_ours(c)


def made(r: httpx.Response) -> None:
    assert r.status_code in (200, 201, 202), r.text


def toast(page: Any, level: str, text: str) -> Any:
    return page.locator(f"#toasts .toast.{level}", has_text=text)


def test_device_changes_and_snapshot_delete_say_what_they_did_or_why_not(
    browser_login: Any, api: httpx.Client
) -> None:
    vms = "/api/hosts/local/vms"
    made(api.post(vms, json={"name": OFF, "memory_mib": 64, "disks": [DISK]}))
    volume = {"name": ISO, "capacity": "1M", "format": "raw"}
    made(api.post(f"{POOL}/volumes", json=volume))
    for snap in ("s1", "s2"):
        made(api.post(f"{vms}/{OFF}/snapshots", json={"name": snap}))
    page = browser_login("admin")
    page.on("dialog", lambda d: d.accept())
    page.goto(f"/vms/local/{OFF}#hardware")
    hw = page.locator("#hardware")

    hw.locator("button:text-is('Add NIC')").click()
    expect(toast(page, "ok", "Added a NIC on network default")).to_be_visible(timeout=WAIT)
    expect(hw.locator("td[data-label=MAC]")).to_have_count(1)

    hw.locator("button:text-is('Attach disk')").click()
    refused = toast(page, "error", "Attach disk failed")
    expect(refused).to_contain_text("New disk size (GiB)", timeout=WAIT)
    expect(refused).not_to_contain_text("size_gib")
    hw.locator("input[name=size_gib]").fill("1")
    hw.locator("button:text-is('Attach disk')").click()
    expect(toast(page, "ok", f"Attached disk vdb ({OFF}-1.qcow2)")).to_be_visible(timeout=WAIT)

    hw.locator("select[aria-label^='ISO volume']").select_option(f"default-pool/{ISO}")
    hw.locator("button:text-is('Insert')").click()
    expect(toast(page, "ok", f"Inserted {ISO} into hdc")).to_be_visible(timeout=WAIT)
    hw.locator("button:text-is('Eject')").click()
    expect(toast(page, "ok", "Ejected the CD from hdc")).to_be_visible(timeout=WAIT)
    shot(page, "vm-hardware-feedback")
    # The ISO goes away while the page still offers it (chosen again: an empty drive's
    # picker asks for a choice).
    hw.locator("select[aria-label^='ISO volume']").select_option(f"default-pool/{ISO}")
    assert api.delete(f"{POOL}/volumes/{ISO}").status_code in (200, 204)
    hw.locator("button:text-is('Insert')").click()
    expect(toast(page, "error", f"Insert CD failed: unknown ISO volume '{ISO}'")).to_be_visible(
        timeout=WAIT
    )

    page.click("nav.tabs a[data-tab=snapshots]")
    snaps = page.locator("#snapshots")
    snaps.locator("li", has_text="s1").locator("button:text-is('Delete')").first.click()
    expect(toast(page, "ok", "Deleted snapshot s1")).to_be_visible(timeout=WAIT)
    # Deleted elsewhere, it leaves the open tab (it stayed there with a Delete button
    # that could only fail).
    assert api.delete(f"{vms}/{OFF}/snapshots/s2").status_code in (200, 204)
    expect(snaps.locator("li", has_text="s2")).to_have_count(0, timeout=WAIT)
    shot(page, "vm-snapshots-feedback")


def test_running_vm_force_off_and_refused_nic_say_so(browser_login: Any, api: httpx.Client) -> None:
    made(api.post("/api/hosts/local/vms", json={"name": ON, "memory_mib": 64, "start": True}))
    page = browser_login("admin")
    page.on("dialog", lambda d: d.accept())
    page.goto(f"/vms/local/{ON}#hardware")
    page.locator("#hardware button:text-is('Add NIC')").click()
    refused = toast(page, "error", "Add NIC failed")
    expect(refused).to_contain_text("running VM; shut it down first", timeout=WAIT)
    expect(refused).not_to_contain_text("virDomain")
    page.click("nav.tabs a[data-tab=overview]")
    page.locator("#overview button:text-is('Force off')").click()
    expect(toast(page, "ok", f"Forced off {ON}")).to_be_visible(timeout=WAIT)
    expect(page.locator("#vm-state")).to_have_text("off")
    shot(page, "vm-forced-off")


def test_snapshot_form_of_a_running_vm_works_as_it_opens(
    browser_login: Any, api: httpx.Client
) -> None:
    """Name filled in, the memory choice explained, and "Take snapshot" as the form
    opens succeeds (it failed: "Automatic" without the memory state)."""
    name = f"{PREFIX}snap"
    spec = {"name": name, "memory_mib": 64, "start": True, "disks": [DISK]}
    made(api.post("/api/hosts/local/vms", json=spec))
    page = browser_login("admin")
    page.goto(f"/vms/local/{name}#snapshots")
    form = page.locator("#snapshots form", has=page.locator("button:text-is('Take snapshot')"))
    name_field = form.locator("input[name=name]")
    expect(name_field).to_have_value(re.compile(r"^snap-\d{8}-\d{6}$"), timeout=WAIT)
    expect(form.locator("select[name=memory]")).to_have_value("")
    help_text = form.locator("#snapshot-memory-help")
    expect(help_text).to_be_visible()
    expect(help_text).to_contain_text("This VM is running")
    expect(help_text).to_contain_text("memory state")
    shot(page, "vm-snapshot-form-running")
    snap = name_field.input_value()
    form.locator("button:text-is('Take snapshot')").click()
    expect(toast(page, "ok", f"Snapshot {snap} taken")).to_be_visible(timeout=WAIT)
    entry = page.locator("#snapshots ul.tree li", has_text=snap)
    expect(entry).to_contain_text("+ memory")
    expect(page.locator("#toasts .toast.error")).to_have_count(0)


def test_snapshots_tab_follows_snapshots_taken_and_deleted_elsewhere(
    browser_login: Any, api: httpx.Client
) -> None:
    """A snapshot taken or deleted through the API (the CLI, another user) shows on an open
    Snapshots tab without a reload, as the other tabs follow their VM (it showed only
    after a reload)."""
    name = f"{PREFIX}live-snaps"
    vms = "/api/hosts/local/vms"
    made(api.post(vms, json={"name": name, "memory_mib": 64, "disks": [DISK]}))
    page = browser_login("admin")
    page.goto(f"/vms/local/{name}#snapshots")
    snaps = page.locator("#snapshots")
    expect(snaps.locator("text=No snapshots.")).to_be_visible(timeout=WAIT)
    expect(page.locator("html[data-live=open]")).to_have_count(1, timeout=WAIT)
    made(api.post(f"{vms}/{name}/snapshots", json={"name": "from-api"}))
    entry = snaps.locator("ul.tree li", has_text="from-api")
    expect(entry).to_be_visible(timeout=WAIT)
    expect(entry.locator("button:text-is('Revert')")).to_be_visible()
    shot(page, "vm-snapshots-live-taken")
    assert api.delete(f"{vms}/{name}/snapshots/from-api").status_code in (200, 204)
    expect(entry).to_have_count(0, timeout=WAIT)
    expect(snaps.locator("text=No snapshots.")).to_be_visible()
    shot(page, "vm-snapshots-live-deleted")


def test_snapshots_taken_outside_the_manager_show_when_the_tab_is_opened(
    browser_login: Any, api: httpx.Client
) -> None:
    """libvirt has no snapshot event (test_snapshot_events.py): a snapshot taken by
    another tool (virsh) on a shut-off VM reaches the page when the user opens the
    Snapshots tab again, with no reload and no polling (it showed only after a reload)."""
    name = f"{PREFIX}outside-snaps"
    made(api.post("/api/hosts/local/vms", json={"name": name, "memory_mib": 64, "disks": [DISK]}))
    page = browser_login("admin")
    page.goto(f"/vms/local/{name}#snapshots")
    snaps = page.locator("#snapshots")
    expect(snaps.locator("text=No snapshots.")).to_be_visible(timeout=WAIT)
    # Live (the stream's catch-up on connecting refreshes every live part once).
    expect(page.locator("html[data-live=open]")).to_have_count(1, timeout=WAIT)
    page.click("nav.tabs a[data-tab=overview]")
    conn = libvirt.open("test:///default")  # the driver the live server's "local" host uses
    try:
        conn.lookupByName(name).snapshotCreateXML(
            "<domainsnapshot><name>by-virsh</name></domainsnapshot>", 0
        )
    finally:
        conn.close()
    page.click("nav.tabs a[data-tab=snapshots]")
    expect(snaps.locator("ul.tree li", has_text="by-virsh")).to_be_visible(timeout=WAIT)
    shot(page, "vm-snapshots-outside-shown")


def test_a_next_boot_change_shows_on_the_overview_without_a_reload(
    browser_login: Any, api: httpx.Client
) -> None:
    """vCPUs raised beyond a running VM's maximum apply at its next boot: the Overview,
    rendered before the change, says so too (it kept the old value until a reload, and
    on every other open page of the VM)."""
    name = f"{PREFIX}pending"
    made(api.post("/api/hosts/local/vms", json={"name": name, "memory_mib": 64, "start": True}))
    page = browser_login("admin")
    page.goto(f"/vms/local/{name}#hardware")
    expect(page.locator("html[data-live=open]")).to_have_count(1, timeout=WAIT)
    other = browser_login("admin")  # another open page of the same VM
    other.goto(f"/vms/local/{name}")
    expect(other.locator("html[data-live=open]")).to_have_count(1, timeout=WAIT)
    form = page.locator("#hardware form").first
    form.locator("input[name=vcpus]").fill("2")
    form.locator("button.primary").click()
    expect(page.locator("#hardware [data-pending]")).to_contain_text("vCPUs 1 → 2", timeout=WAIT)
    page.click("nav.tabs a[data-tab=overview]")
    expect(page.locator("#overview [data-pending]")).to_contain_text("vCPUs 1 → 2", timeout=WAIT)
    expect(other.locator("#overview [data-pending]")).to_contain_text("vCPUs 1 → 2", timeout=WAIT)
    shot(page, "vm-pending-overview-live")


def test_deleting_a_vm_names_it_in_the_toast(browser_login: Any, api: httpx.Client) -> None:
    """The toast after Delete VM names the VM the user deleted, not its UUID (the page
    posts to the VM's UUID address)."""
    name = f"{PREFIX}del"
    made(api.post("/api/hosts/local/vms", json={"name": name, "memory_mib": 64, "disks": [DISK]}))
    page = browser_login("admin")
    page.on("dialog", lambda d: d.accept())
    page.goto(f"/vms/local/{name}")
    page.check("input[name=remove_volumes]")
    page.click("button:text-is('Delete VM')")
    expect(page).to_have_url(re.compile(r"/vms$"), timeout=WAIT)
    done = toast(page, "ok", f"Deleted {name} and 1 volume(s)")
    expect(done).to_be_visible(timeout=WAIT)
    assert not UUID.search(done.inner_text()), done.inner_text()
    shot(page, "vm-deleted-toast")


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_refused_forms_are_audited_with_their_reason_and_vm_names(
    browser_login: Any, api: httpx.Client
) -> None:
    """A refused form is an "error" entry saying who tried what and why it was refused;
    the log names the VM, not its UUID."""
    name = f"{PREFIX}audit"
    made(api.post("/api/hosts/local/vms", json={"name": name, "memory_mib": 64}))
    page = browser_login("admin")
    page.goto(f"/vms/local/{name}#hardware")
    page.locator("#hardware button:text-is('Attach disk')").click()
    expect(toast(page, "error", "Attach disk failed")).to_be_visible(timeout=WAIT)
    page.goto("/vms/new")
    page.fill("input[name=name]", "bad/name")
    step(page, 3)
    page.check("input[name=source][value=blank]")
    page.fill("input[name=disk_gib]", "0")
    submit(page)
    expect(page.locator("#err-name")).to_be_visible(timeout=WAIT)

    page.goto(f"/audit?user={page.username}")
    rows = page.locator("tbody tr")
    disk = rows.filter(has=page.locator("td[data-label=Action]", has_text="web.vm_disk_attach"))
    expect(disk.locator("td[data-label=Target]")).to_have_text(f"local/{name}")
    expect(disk.locator("td[data-label=Result]")).to_contain_text("error 422")
    expect(disk.locator(".audit-reason")).to_contain_text("New disk size (GiB)")
    create = rows.filter(has=page.locator("td[data-label=Action]", has_text="web.vm_create"))
    expect(create.locator("td[data-label=Target]")).to_have_text("local/bad/name")
    expect(create.locator("td[data-label=Result]")).to_contain_text("error 422")
    expect(create.locator(".audit-reason")).to_contain_text("'/'")
    for cell in rows.locator("td[data-label=Target]").all_inner_texts():
        assert not UUID.search(cell), cell
    shot(page, "audit-refused-forms")
