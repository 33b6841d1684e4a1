"""The dashboard's manager-instance card is an admin's, as GET /api/instances is: a viewer's
dashboard has none, its fragment is refused, and the event stream's `instance.*` events
reach admins only. A lone SQLite instance lists itself, serving the page and holding the
lease."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from kvmmanager.services.users import ownership
from kvmmanager.services.users.service import Principal
from kvmmanager.virt.events import Event


def test_an_admin_sees_this_instance_and_a_viewer_sees_no_card(
    web_as: Callable[[str], TestClient],
) -> None:
    admin, viewer = web_as("admin"), web_as("viewer")
    page = admin.get("/").text
    assert '<h2 id="instances-title">Manager instances</h2>' in page
    assert page.count("<tr data-instance=") == 1
    assert "this page</span>" in page and "holds the lease</span>" in page
    fragment = admin.get("/dashboard/instances")
    assert fragment.status_code == 200 and 'id="instances"' in fragment.text
    assert "Manager instances" not in viewer.get("/").text
    assert viewer.get("/dashboard/instances").status_code == 403


def test_instance_events_are_visible_to_admins_only() -> None:
    event = Event(kind="instance.heartbeat", host="", subject="an-instance-id")
    for role, visible in (("admin", True), ("operator", False), ("viewer", False)):
        who = Principal(id=1, username=f"kvmm-t-{role}", role=role, via="session")
        assert ownership.event_visible(who, event) is visible, role
