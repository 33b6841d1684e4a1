"""The web UI's delete toast (issue 17, item 4): it read `volumes_removed` while the
service answered `deleted_volumes`, so the count of deleted volumes never showed. Both
now share the typed `VmDeleted`."""

from __future__ import annotations

import json
import uuid
from urllib.parse import unquote

import libvirt


def test_delete_with_volumes_toast_counts_the_deleted_volumes(web_as) -> None:
    c = web_as("operator")
    headers = {"X-CSRF-Token": c.csrf, "HX-Request": "true"}
    name = f"kvmm-t-web-del-{uuid.uuid4().hex[:6]}"
    form = {
        "host": "local",
        "source": "blank",
        "disk_gib": "1",
        "disk_pool": "default-pool",
        "install_agent": "false",
        "name": name,
    }
    assert c.post("/vms/new", data=form, headers=headers).status_code == 204

    r = c.post(f"/vms/local/{name}/delete", data={"remove_volumes": "true"}, headers=headers)
    assert r.status_code == 204, r.text
    # The toast travels to the page the answer redirects to, in the flash cookie.
    (toast,) = json.loads(unquote(r.cookies["kvmm_flash"]))
    assert toast["message"] == f"Deleted {name} and 1 volume(s)"
    conn = libvirt.open("test:///default")
    try:
        left = conn.storagePoolLookupByName("default-pool").listVolumes()
    finally:
        conn.close()
    assert not [v for v in left if v.startswith(name)]
