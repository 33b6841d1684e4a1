"""Web pages over HTTP (no browser): auth, roles, CSRF, headers, escaping, forms."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from kvmmanager.web.security import CSP

PAGES = ["/", "/vms", "/vms/local/test", "/storage", "/networks", "/agent-iso", "/account"]
ADMIN_PAGES = ["/users", "/audit"]


def test_anonymous_visit_redirects_to_login_with_next(web_app: FastAPI) -> None:
    with TestClient(web_app) as c:
        for path in [*PAGES, *ADMIN_PAGES]:
            r = c.get(path, follow_redirects=False)
            assert r.status_code == 303, path
            assert r.headers["location"].startswith("/login?next=")
        assert c.get("/login").status_code == 200
        assert (
            c.get("/vms/local/test/row", headers={"HX-Request": "true"}).headers["hx-redirect"]
            == "/login"
        )


def test_login_rejects_wrong_password_and_never_redirects_off_site(web_as, web_app) -> None:
    c = web_as("viewer")
    c.cookies.clear()
    r = c.post("/login", data={"username": c.username, "password": "wrong-password"})
    assert r.status_code == 401
    assert 'role="alert"' in r.text
    r = c.post(
        "/login",
        data={
            "username": c.username,
            "password": "kvmm-t-web-password",
            "next": "//evil.example/x",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/"


def test_every_page_renders_for_each_role(web_as) -> None:
    for role in ("viewer", "operator", "admin"):
        c = web_as(role)
        for path in PAGES:
            r = c.get(path)
            assert r.status_code == 200, (role, path, r.text[:300])
            assert r.headers["content-security-policy"] == CSP
        for path in ADMIN_PAGES:
            assert c.get(path).status_code == (200 if role == "admin" else 403), (role, path)


def test_viewer_sees_no_action_buttons_and_is_refused_anyway(web_as) -> None:
    viewer = web_as("viewer")
    page = viewer.get("/vms/local/test").text
    assert "/actions/start" not in page and "/actions/destroy" not in page
    assert "Delete VM" not in page
    assert "Create VM" not in viewer.get("/vms").text
    r = viewer.post("/vms/local/test/actions/destroy", headers={"X-CSRF-Token": viewer.csrf})
    assert r.status_code == 403
    operator = web_as("operator")
    assert "/actions/destroy" in operator.get("/vms/local/test").text


def test_writes_without_the_csrf_header_are_refused(web_as) -> None:
    c = web_as("operator")
    assert c.post("/vms/local/test/actions/suspend").status_code == 403
    r = c.post("/vms/local/test/actions/suspend", headers={"X-CSRF-Token": c.csrf})
    assert r.status_code == 200
    assert "paused" in r.text
    assert c.post("/vms/local/test/actions/resume", headers={"X-CSRF-Token": c.csrf}).is_success


def test_action_errors_come_back_as_a_toast_with_libvirts_message(web_as) -> None:
    c = web_as("operator")
    headers = {"X-CSRF-Token": c.csrf, "HX-Request": "true"}
    c.post("/vms/local/test/actions/suspend", headers=headers)
    r = c.post("/vms/local/test/actions/suspend", headers=headers)
    assert r.status_code == 409
    assert "already paused" in r.headers["hx-trigger"]
    assert c.post("/vms/local/test/actions/resume", headers=headers).is_success


def test_create_wizard_validates_inline_then_creates_and_audits(web_as) -> None:
    c = web_as("operator")
    headers = {"X-CSRF-Token": c.csrf, "HX-Request": "true"}
    form = {"host": "local", "source": "blank", "disk_gib": "0", "install_agent": "false"}
    r = c.post("/vms/new", data={**form, "name": "bad/name"}, headers=headers)
    assert r.status_code == 422
    assert re.search(r'id="err-name"[^>]*>[^<]*name', r.text)
    r = c.post("/vms/new", data={**form, "name": "kvmm-t-web-vm"}, headers=headers)
    assert r.status_code == 204, r.text
    assert r.headers["hx-redirect"] == "/vms/local/kvmm-t-web-vm"
    assert "kvmm-t-web-vm" in c.get("/vms").text
    admin = web_as("admin")
    audit = admin.get("/audit", params={"action": "web.vm_create"}).text
    assert c.username in audit


def test_user_supplied_text_is_escaped(web_as) -> None:
    c = web_as("operator")
    headers = {"X-CSRF-Token": c.csrf, "HX-Request": "true"}
    evil = '<img src=x onerror="alert(1)">'
    r = c.post(
        "/vms/new",
        data={
            "host": "local",
            "name": "kvmm-t-web-xss",
            "source": "blank",
            "disk_gib": "0",
            "description": evil,
        },
        headers=headers,
    )
    assert r.status_code == 204, r.text
    page = c.get("/vms/local/kvmm-t-web-xss").text
    assert evil not in page
    assert "&lt;img src=x" in page


def test_hardware_tab_edits_cpu_memory_disks_and_nics(web_as) -> None:
    c = web_as("operator")
    headers = {"X-CSRF-Token": c.csrf, "HX-Request": "true"}
    form = {"host": "local", "source": "blank", "disk_gib": "0", "install_agent": "false"}
    assert (
        c.post("/vms/new", data={**form, "name": "kvmm-t-web-hw"}, headers=headers).status_code
        == 204
    )
    base = "/vms/local/kvmm-t-web-hw"
    r = c.post(f"{base}/resources", data={"vcpus": "2", "memory_mib": "768"}, headers=headers)
    assert r.status_code == 200, r.text
    assert "next boot" in r.headers["hx-trigger"] or "applied" in r.headers["hx-trigger"]
    assert 'value="2"' in r.text and 'value="768"' in r.text
    r = c.post(f"{base}/disks", data={"pool": "default-pool", "size_gib": "1"}, headers=headers)
    assert r.status_code == 200, r.text
    target = re.search(r"/disks/([a-z]+)/detach", r.text).group(1)
    r = c.post(f"{base}/disks/{target}/detach", headers=headers)
    assert r.status_code == 200 and f"/disks/{target}/detach" not in r.text
    r = c.post(f"{base}/nics", data={"network": "default"}, headers=headers)
    assert r.status_code == 200, r.text
    mac = re.search(r"/nics/([0-9a-f:]{17})/detach", r.text).group(1)
    r = c.post(f"{base}/nics/{mac}/detach", headers=headers)
    assert r.status_code == 200 and mac not in r.text


def test_snapshots_tab_takes_reverts_and_deletes(web_as) -> None:
    c = web_as("operator")
    headers = {"X-CSRF-Token": c.csrf, "HX-Request": "true"}
    form = {
        "host": "local",
        "source": "blank",
        "disk_gib": "1",
        "disk_pool": "default-pool",
        "install_agent": "false",
    }
    assert (
        c.post("/vms/new", data={**form, "name": "kvmm-t-web-snap"}, headers=headers).status_code
        == 204
    )
    base = "/vms/local/kvmm-t-web-snap"
    assert "No snapshots" in c.get(f"{base}/snapshots").text
    r = c.post(
        f"{base}/snapshots", data={"name": "first", "description": "<b>x</b>"}, headers=headers
    )
    assert r.status_code == 200, r.text
    assert "first" in r.text and "&lt;b&gt;x&lt;/b&gt;" in r.text
    assert (
        "crash" in r.headers["hx-trigger"].lower()
        or "snapshot first" in r.headers["hx-trigger"].lower()
    )
    r = c.post(f"{base}/snapshots", data={"name": "second"}, headers=headers)
    assert r.status_code == 200 and "second" in r.text
    r = c.post(f"{base}/snapshots/first/revert", headers=headers)
    assert r.status_code == 200 and "Reverted to first" in r.headers["hx-trigger"]
    r = c.post(f"{base}/snapshots/second/delete", headers=headers)
    assert r.status_code == 200 and "second" not in r.text.split("<h2>Take")[0]
    viewer = web_as("viewer")
    assert "Take snapshot" not in viewer.get(f"{base}/snapshots").text


def test_network_delete_needs_admin_like_the_api(web_as) -> None:
    operator = web_as("operator")
    headers = {"X-CSRF-Token": operator.csrf, "HX-Request": "true"}
    r = operator.post("/networks/local/default/actions/delete", headers=headers)
    assert r.status_code == 403
    assert "admin" in r.headers["hx-trigger"]


def test_addresses_cell_and_api_name_their_source(web_as) -> None:
    c = web_as("operator")
    headers = {"X-CSRF-Token": c.csrf, "HX-Request": "true"}
    state = c.get("/api/hosts/local/vms/test").json()["state"]  # the test driver's own VM
    if state != "running":
        c.post(f"/vms/local/test/actions/{'resume' if state == 'paused' else 'start'}",
               headers=headers)  # fmt: skip
    row = c.get("/vms?q=test").text
    assert "/addresses" in row  # a running VM's cell loads lazily
    r = c.get("/vms/local/test/addresses")  # the test driver fakes a DHCP lease for it
    assert r.status_code == 200 and ">dhcp<" in r.text
    found = c.get("/api/hosts/local/vms/test/addresses").json()
    assert [a["source"] for a in found] == ["dhcp"]
    assert found[0]["ip"].startswith("192.168.122.") and found[0]["mac"] == "aa:bb:cc:dd:ee:ff"
