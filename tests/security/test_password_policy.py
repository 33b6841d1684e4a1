"""Common and guessable passwords are refused wherever a password is set: user creation
and password changes, in the API, the web UI and the CLI (core/password_policy.py: length
plus zxcvbn's estimate against its bundled common-password and word lists).

Before: `password`, `12345678` and the like were accepted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

WEAK = ["password", "12345678", "qwertyuiop", "iloveyou1", "Password1", "admin12345"]


@pytest.mark.parametrize("weak", WEAK)
def test_api_user_creation_refuses_a_common_password(client: TestClient, weak: str) -> None:
    r = client.post(
        "/api/users", json={"username": "kvmm-t-pw-new", "password": weak, "role": "viewer"}
    )
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == "password"
    assert "guess" in err["message"]
    assert all(u["username"] != "kvmm-t-pw-new" for u in client.get("/api/users").json())


def test_a_password_built_from_the_user_name_is_refused(client: TestClient) -> None:
    r = client.post(
        "/api/users",
        json={"username": "kvmm-t-pw-alice", "password": "kvmm-t-pw-alice", "role": "viewer"},
    )
    assert r.status_code == 422, r.text


def test_password_changes_refuse_common_passwords(
    client: TestClient, client_as: Callable[[str], TestClient]
) -> None:
    r = client.patch("/api/users/admin", json={"password": "12345678"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "password", r.text
    viewer = client_as("viewer")  # password kvmm-t-password
    r = viewer.post(
        "/api/auth/password",
        json={"current_password": "kvmm-t-password", "new_password": "password1"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "new_password"
    assert "guess" in r.json()["error"]["message"]


def test_a_strong_password_is_accepted(client: TestClient) -> None:
    r = client.post(
        "/api/users",
        json={"username": "kvmm-t-pw-ok", "password": "violet-tundra-48-lamp", "role": "viewer"},
    )
    assert r.status_code == 201, r.text


def test_web_user_form_shows_the_policy_error(client: TestClient) -> None:
    r = client.post(
        "/users", data={"username": "kvmm-t-pw-web", "password": "password", "role": "viewer"}
    )
    assert r.status_code == 200
    assert "too easy to guess" in r.text
    assert all(u["username"] != "kvmm-t-pw-web" for u in client.get("/api/users").json())


def test_cli_user_add_refuses_a_common_password(cli: Callable[..., Any]) -> None:
    result = cli("user", "add", "kvmm-t-pw-cli", "--password-stdin", input="12345678\n")
    assert result.exit_code == 2, result.output
    assert "too easy to guess" in result.output + (result.stderr or "")
