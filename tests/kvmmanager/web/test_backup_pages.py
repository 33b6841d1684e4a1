"""The backups page's method fields (snapshot / backup / copy, pool, full_every) with
errors beside their fields, and the images fragment's routes answering bad requests
(test driver; the images against the real libvirtd: test_backup_pages_libvirtd.py)."""

from __future__ import annotations

import re
from typing import Any

from tests.kvmmanager.web.test_ops_pages import field_error, hx

FORM = {"name": "kvmm-t-bkm", "tag": "kvmm-t-none", "keep_last": "2", "keep_daily": "0",
        "keep_weekly": "0", "timezone": "UTC", "quiesce": "auto"}  # fmt: skip


def test_policy_form_method_fields_validate_and_show(web_as: Any) -> None:
    c = web_as("operator")
    m = c.app.state.manager
    page = c.get("/backups").text
    assert '<select name="method"' in page and 'name="full_every"' in page
    assert '<option value="default-pool">' in page  # the pool suggestions
    bad = {
        "pool": ({"method": "backup"}, "needs the pool"),
        "method": ({"method": "tape"}, "method must be one of"),
        "full_every": ({"method": "backup", "pool": "default-pool", "full_every": "x"},
                       "whole number"),
    }  # fmt: skip
    bad["full_every_range"] = ({"method": "backup", "pool": "p", "full_every": "0"}, "1..100")
    for key, (change, words) in bad.items():
        r = c.post("/backups", data={**FORM, **change}, headers=hx(c))
        assert r.status_code == 422, key
        assert words in field_error(r.text, key.removesuffix("_range")), key
        # What was typed stays in the form.
        assert f'<option value="{change["method"]}" selected' in r.text or key == "method"
    assert m.backups.list() == []
    data = {**FORM, "method": "backup", "pool": "default-pool", "full_every": "3"}
    try:
        assert c.post("/backups", data=data, headers=hx(c)).status_code == 204
        p = m.backups.get("kvmm-t-bkm")
        assert (p["method"], p["pool"], p["full_every"]) == ("backup", "default-pool", 3)
        row = re.search(r'<tr id="policy-kvmm-t-bkm">.*?</tr>', c.get("/backups").text, re.S)
        assert "into default-pool, full every 3" in row.group(0)
        assert "/backups/kvmm-t-bkm/images" in row.group(0)  # not its snapshots
        edit = c.get("/backups?edit=kvmm-t-bkm").text
        assert '<option value="backup" selected' in edit and 'value="3"' in edit
        r = c.post("/backups/kvmm-t-bkm", data={**data, "full_every": "5"}, headers=hx(c))
        assert r.status_code == 204 and m.backups.get("kvmm-t-bkm")["full_every"] == 5
        r = c.post("/backups/kvmm-t-bkm", data={**data, "pool": ""}, headers=hx(c))
        assert r.status_code == 422 and "needs the pool" in field_error(r.text, "pool")
        images = c.get("/backups/kvmm-t-bkm/images").text
        assert "Backups made by kvmm-t-bkm" in images and "No backups yet." in images
        assert "All backups" in c.get("/backup-images").text
        assert c.get("/backups/kvmm-t-nope/images").status_code == 404
        assert c.get("/backup-images/jobs/kvmm-t-nojob").status_code == 404
        r = c.post("/backup-images/local/kvmm-t-x/999999/verify", headers=hx(c))
        assert r.status_code == 404
    finally:
        c.post("/backups/kvmm-t-bkm/delete", headers=hx(c))
    assert m.backups.list() == []
