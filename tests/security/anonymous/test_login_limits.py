"""Login throttling cannot be turned against the real user, forwarded headers are believed
from trusted proxies only (and then give per-client limits and Secure cookies), token
responses are not cacheable, and a cross-site form cannot log a browser in."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from tests.security.anonymous.conftest import Served

BEHIND_PROXY = {"KVMM_SERVER__TRUSTED_PROXIES": '["127.0.0.1"]'}


def _login(c: httpx.Client, password: str, **headers: str) -> httpx.Response:
    return c.post(
        "/api/auth/login", json={"username": "admin", "password": password}, headers=headers
    )


def test_an_attacker_failing_admin_logins_does_not_lock_admin_out(
    serve: Callable[..., Served],
) -> None:
    """30 wrong passwords for `admin` from one address: that address is slowed down and
    then refused (429 with Retry-After), while admin logs in from another address."""
    srv = serve()
    with srv.client(source="127.0.0.2") as attacker:
        codes = [_login(attacker, f"guess-{i}").status_code for i in range(30)]
        assert codes.count(401) >= 5 and codes[-1] == 429, codes
        r = _login(attacker, "guess-again")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        # The right password from the attacker's address waits too: it is the guesser.
        assert _login(attacker, srv.admin_password).status_code == 429
    with srv.client(source="127.0.0.3") as admin:
        r = _login(admin, srv.admin_password)
        assert r.status_code == 200, r.text
        assert r.json()["username"] == "admin"


def test_behind_a_trusted_proxy_limits_are_per_forwarded_client(
    serve: Callable[..., Served],
) -> None:
    """With the proxy in server.trusted_proxies, one client's failures behind it do not
    lock out another client behind the same proxy (the limit used to be one for the
    whole site)."""
    srv = serve(env=BEHIND_PROXY)
    with srv.client() as proxy:
        for i in range(30):
            _login(proxy, f"guess-{i}", **{"X-Forwarded-For": "203.0.113.5"})
        assert _login(proxy, "guess", **{"X-Forwarded-For": "203.0.113.5"}).status_code == 429
        r = _login(proxy, srv.admin_password, **{"X-Forwarded-For": "198.51.100.7"})
        assert r.status_code == 200, r.text


def test_forwarded_headers_from_an_untrusted_address_are_ignored(
    serve: Callable[..., Served],
) -> None:
    """A client that is not a trusted proxy cannot pick its address with X-Forwarded-For:
    its attempts are counted against its own address whatever it claims."""
    srv = serve(env=BEHIND_PROXY)
    codes = []
    with srv.client(source="127.0.0.4") as c:
        for i in range(30):
            fake = {"X-Forwarded-For": f"198.51.100.{i}"}
            codes.append(_login(c, f"guess-{i}", **fake).status_code)
    assert codes[-1] == 429, codes


def test_secure_cookie_and_hsts_behind_a_tls_proxy(serve: Callable[..., Served]) -> None:
    """X-Forwarded-Proto: https from the trusted proxy makes the session cookie Secure and
    adds Strict-Transport-Security; the same header from anyone else changes nothing."""
    srv = serve(env=BEHIND_PROXY)
    tls = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.20"}
    with srv.client() as proxy:
        r = _login(proxy, srv.admin_password, **tls)
        assert r.status_code == 200, r.text
        assert "secure" in r.headers["set-cookie"].lower()
        assert r.headers["strict-transport-security"].startswith("max-age=")
    with srv.client(source="127.0.0.5") as direct:
        r = _login(direct, srv.admin_password, **tls)
        assert r.status_code == 200, r.text
        assert "secure" not in r.headers["set-cookie"].lower()
        assert "strict-transport-security" not in r.headers


def test_token_and_login_responses_are_not_cacheable(serve: Callable[..., Served]) -> None:
    srv = serve()
    srv.admin_token()  # the generated first password is changed before tokens can be made
    with srv.client(source="127.0.0.6") as c:
        r = _login(c, srv.admin_password)
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
        r = c.get("/api/auth/me")
        assert r.headers["cache-control"] == "no-store"  # carries the CSRF token
        r = c.post("/api/tokens", json={"name": "kvmm-t-secanon-cache"}, headers=csrf)
        assert r.status_code == 201 and r.headers["cache-control"] == "no-store", r.text
        assert c.get("/login").headers["cache-control"] == "no-store"


def test_a_cross_site_form_cannot_log_a_browser_in(serve: Callable[..., Served]) -> None:
    """Login CSRF: a form on another site posting to /login (with the attacker's own
    credentials) is refused and sets no cookie; the server's own page still logs in."""
    srv = serve()
    form = {"username": "admin", "password": srv.admin_password, "next": "/"}
    with srv.client(source="127.0.0.7", follow_redirects=False) as browser:
        for evil in ({"Origin": "https://evil.example"}, {"Origin": "null"}):
            r = browser.post("/login", data=form, headers=evil)
            assert r.status_code == 403, r.text
            assert "set-cookie" not in r.headers and "cross-site" in r.text
        r = browser.post("/login", data=form, headers={"Referer": "https://evil.example/x"})
        assert r.status_code == 403 and "set-cookie" not in r.headers
        r = browser.post("/api/auth/login", json=form, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and "set-cookie" not in r.headers
        same = {"Origin": f"http://127.0.0.1:{srv.port}"}
        r = browser.post("/login", data=form, headers=same)
        assert r.status_code == 303, r.text
        assert "kvmm_session=" in r.headers["set-cookie"]
