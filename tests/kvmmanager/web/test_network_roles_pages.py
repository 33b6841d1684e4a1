"""Network start/stop/autostart on the web pages by role: the independent try of issue 15
found an operator shown Start/Stop on every network and able to stop one (cutting every VM
on it, other users' too, off the network). Only admins get them, as for pools; an
operator's hand-made post is refused, and the audit log records the refusal."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from fastapi.testclient import TestClient


def test_network_start_stop_is_for_admins(web_as: Callable[[str], TestClient]) -> None:
    admin, operator = web_as("admin"), web_as("operator")
    net = f"kvmm-t-nrole-{uuid.uuid4().hex[:6]}"
    r = admin.post(
        "/networks/local",
        data={"name": net, "forward": "isolated", "address": "10.213.91.1", "prefix": "24"},
        headers={"X-CSRF-Token": admin.csrf},
    )
    assert r.is_success, r.text
    try:
        stop = f"/networks/local/{net}/actions/stop"
        # The operator sees the network but no Stop/Start/autostart control for it.
        page = operator.get("/networks").text
        assert net in page
        assert f"/networks/local/{net}/actions/" not in page
        for action in ("stop", "autostart", "noautostart"):
            r = operator.post(
                f"/networks/local/{net}/actions/{action}",
                headers={"X-CSRF-Token": operator.csrf},
            )
            assert r.status_code == 403 and "admin" in r.text, (action, r.text)
        # Nothing changed: the network still runs, and the admin still has Stop.
        page = admin.get("/networks").text
        assert stop in page
        assert admin.post(stop, headers={"X-CSRF-Token": admin.csrf}).status_code == 204
        # An unknown action is bad input for any role, named before the role is asked.
        r = operator.post(
            f"/networks/local/{net}/actions/teleport", headers={"X-CSRF-Token": operator.csrf}
        )
        assert r.status_code == 422, r.text
    finally:
        admin.post(f"/networks/local/{net}/actions/delete", headers={"X-CSRF-Token": admin.csrf})
