"""The account page's password change (issue 15 newcomer try: it answered with a toast
on a redirecting response, so the toast died with the page and the user landed on an
empty login form with no word of what had happened)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote


def test_a_password_change_says_so_on_the_login_page_it_leads_to(web_as) -> None:
    c = web_as("viewer")
    headers = {"X-CSRF-Token": c.csrf, "HX-Request": "true"}
    form = {"current_password": "kvmm-t-web-password", "new_password": "kvmm-t-web-password-2"}
    r = c.post("/account/password", data=form, headers=headers)
    assert r.status_code == 204, r.text
    assert r.headers["HX-Redirect"] == "/login"
    # The toast travels to the login page in the flash cookie, which app.js shows there.
    (toast,) = json.loads(unquote(r.cookies["kvmm_flash"]))
    assert toast == {"message": "Password changed; log in with the new one", "level": "ok"}


def _flash(r: Any) -> list[dict[str, str]]:
    assert r.status_code == 204, r.text
    assert r.headers["HX-Refresh"] == "true"
    return list(json.loads(unquote(r.cookies["kvmm_flash"])))


def test_actions_that_refresh_the_page_keep_their_toast(web_as) -> None:
    """A toast sent on an HX-Refresh answer died with the page it refreshed: user delete,
    token revoke, network and pool actions gave no word (issue 15 newcomer try)."""
    admin = web_as("admin")
    headers = {"X-CSRF-Token": admin.csrf, "HX-Request": "true"}
    manager = admin.app.state.manager
    manager.users.create("kvmm-t-gone", "kvmm-t-password-1", "viewer")
    r = admin.post("/users/kvmm-t-gone", data={"action": "delete"}, headers=headers)
    assert _flash(r) == [{"message": "user kvmm-t-gone: delete done", "level": "ok"}]

    token, _secret = manager.users.create_token(admin.username, "kvmm-t-soon-revoked")
    r = admin.post(f"/tokens/{token.id}/revoke", headers=headers)
    assert _flash(r) == [{"message": "Token revoked", "level": "ok"}]

    r = admin.post("/networks/local/default/actions/autostart", headers=headers)
    assert _flash(r) == [{"message": "network default: autostart done", "level": "ok"}]
