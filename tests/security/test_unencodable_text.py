"""Lone UTF-16 surrogates (`"\\ud800"` in JSON) are refused with a 422 naming the field,
on every route, and an audit log that already holds one still reads back.

Before: an anonymous login with one made `/api/audit` (and the audit page) answer 500
from then on; one in a VM description was a 500."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kvmmanager.db.models import AuditEntry

JSON = {"content-type": "application/json"}


def _raw(app: FastAPI, client: TestClient, **headers: str) -> TestClient:
    c = TestClient(app, raise_server_exceptions=False, follow_redirects=False, headers=headers)
    c.portal = client.portal
    return c


def test_anonymous_login_with_a_lone_surrogate_leaves_the_audit_log_readable(
    app: FastAPI, client: TestClient
) -> None:
    anon = _raw(app, client)
    r = anon.post(
        "/api/auth/login", content=b'{"username": "adm\\ud800in", "password": "x"}', headers=JSON
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "username"
    assert "surrogate" in r.json()["error"]["message"]

    admin = _raw(app, client, authorization=client.headers["authorization"])
    r = admin.get("/api/audit")
    assert r.status_code == 200, r.text
    logins = [e for e in r.json()["items"] if e["action"] == "auth.login"]
    assert logins and logins[0]["params"]["username"] == "adm\\ud800in"
    assert admin.get("/audit").status_code == 200


def test_rows_stored_before_the_check_read_back(app: FastAPI, client: TestClient) -> None:
    with app.state.manager.db.begin() as s:
        s.add(
            AuditEntry(
                action="kvmm-t-val.old",
                params={"\udc80key": ["x\ud800y"]},
                result="error",
            )
        )
    admin = _raw(app, client, authorization=client.headers["authorization"])
    r = admin.get("/api/audit", params={"action": "kvmm-t-val.old"})
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["params"] == {"\\udc80key": ["x\\ud800y"]}
    assert admin.get("/audit").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"description": "\\udc00"}', "description"),
        (b'{"tags": ["ok", "bad\\ud83d"]}', "tags.1"),
        (b'{"name": "\\ud800\\ud800"}', "name"),
    ],
)
def test_a_lone_surrogate_in_a_vm_change_is_a_422_naming_the_field(
    app: FastAPI, client: TestClient, body: bytes, field: str
) -> None:
    admin = _raw(app, client, authorization=client.headers["authorization"])
    before = admin.get("/api/hosts/local/vms/test").json()
    r = admin.patch("/api/hosts/local/vms/test", content=body, headers=JSON)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field
    assert admin.get("/api/hosts/local/vms/test").json() == before


def test_a_surrogate_pair_is_real_text_and_accepted(client: TestClient) -> None:
    r = client.patch(
        "/api/hosts/local/vms/test", content=b'{"description": "ok \\ud83d\\ude00"}', headers=JSON
    )
    assert r.status_code == 200, r.text
    assert client.get("/api/hosts/local/vms/test").json()["description"] == "ok \U0001f600"


def test_a_web_form_cannot_carry_a_lone_surrogate(app: FastAPI, client: TestClient) -> None:
    """A form field with a surrogate's UTF-8-style bytes (ED A0 80) is decoded with
    replacement characters: the page answers, and nothing unencodable is stored (the
    audit entry of the request shows what the form decoded to)."""
    admin = _raw(app, client, authorization=client.headers["authorization"])
    body = b"name=kvmm-t-val-snap&description=x%ED%A0%80y"
    r = admin.post(
        "/vms/local/test/snapshots",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded", "hx-request": "true"},
    )
    assert r.status_code < 500, r.text
    r = admin.get("/api/audit", params={"action": "web.vm_snapshot_create"})
    assert r.status_code == 200, r.text
    (entry,) = r.json()["items"]
    assert "\ud800" not in entry["params"]["description"]
    assert "\ufffd" in entry["params"]["description"]
    assert admin.get("/audit").status_code == 200
