"""The account page's password change (issue 15 newcomer try: it answered with a toast
on a redirecting response, so the toast died with the page and the user landed on an
empty login form with no word of what had happened)."""

from __future__ import annotations

import json
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
