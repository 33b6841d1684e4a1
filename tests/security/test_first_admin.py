"""The first admin's generated password goes only to its 0600 file, and a login with it
can do nothing but change it (API: 403 password_change_required naming the way out; web
UI: every page leads to the account page; CLI: `kvm-manager login` asks for a new one).

Before: the password was printed to stdout (the journal under systemd) and never had to
be changed."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from kvmmanager.cli.main import app as cli_app
from kvmmanager.core.config import Settings
from kvmmanager.services.manager import Manager

NEW = "kvmm-t-first-admin-new-pw-7c1e"


def test_the_password_is_not_printed(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    m = Manager(settings)
    m.prepare_database()
    out = capsys.readouterr()
    assert m.initial_admin_password
    assert m.initial_admin_password not in out.out + out.err
    assert str(m.users.initial_password_file()) in out.out
    m.engine.dispose()


def _anon(app: FastAPI, client: TestClient) -> TestClient:
    c = TestClient(app, raise_server_exceptions=False, follow_redirects=False)
    c.portal = client.portal
    return c


def test_an_api_login_with_it_can_only_change_it(app: FastAPI, client: TestClient) -> None:
    password = app.state.manager.initial_admin_password
    anon = _anon(app, client)
    r = anon.post("/api/auth/login", json={"username": "admin", "password": password})
    assert r.status_code == 200, r.text
    assert r.json()["password_change_required"] is True
    csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
    for method, path in [("GET", "/api/vms"), ("GET", "/api/users"), ("POST", "/api/tokens")]:
        r = anon.request(
            method, path, headers=csrf, json={"name": "x"} if method == "POST" else None
        )
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["code"] == "password_change_required"
        assert "/api/auth/password" in r.json()["error"]["message"]
    assert anon.get("/api/auth/me").status_code == 200
    # Not the same one, and not a guessable one.
    for new in (password, "password1"):
        r = anon.post(
            "/api/auth/password",
            json={"current_password": password, "new_password": new},
            headers=csrf,
        )
        assert r.status_code == 422, r.text
    r = anon.post(
        "/api/auth/password", json={"current_password": password, "new_password": NEW}, headers=csrf
    )
    assert r.status_code == 200, r.text
    assert anon.get("/api/vms").status_code == 200
    assert not app.state.manager.users.get("admin").must_change_password


def test_the_web_ui_sends_it_to_the_account_page(app: FastAPI, client: TestClient) -> None:
    password = app.state.manager.initial_admin_password
    anon = _anon(app, client)
    r = anon.post("/login", data={"username": "admin", "password": password, "next": "/vms"})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/account"
    r = anon.get("/vms")
    assert r.status_code == 303 and r.headers["location"] == "/account"
    r = anon.get("/account")
    assert r.status_code == 200
    assert "Change your password first" in r.text


def test_the_cli_login_asks_for_a_new_one(live_server: Any, tmp_path: Any) -> None:
    password = live_server.manager.initial_admin_password
    runner = CliRunner()
    env = {"KVMM_URL": live_server.url}
    r = runner.invoke(
        cli_app, ["login", "-u", "admin", "--password-stdin"], input=password + "\n", env=env
    )
    assert r.exit_code == 2, r.output
    assert "must be changed" in r.output
    r = runner.invoke(
        cli_app,
        ["login", "-u", "admin", "--password-stdin"],
        input=f"{password}\n{NEW}\n",
        env=env,
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli_app, ["--json", "user", "list"], env=env)
    assert r.exit_code == 0, r.output


def test_a_reset_password_must_be_changed_too(client: TestClient, app: FastAPI) -> None:
    users = app.state.manager.users
    new = users.reset_admin()
    assert users.authenticate("admin", new).must_change_password
