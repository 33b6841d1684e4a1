"""One error shape for every failure; bad input is never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from kvmmanager.api.app import create_app
from kvmmanager.core.config import Settings
from kvmmanager.core.errors import Conflict, HostUnavailable, NotFound


class Disk(BaseModel):
    size_gib: int = Field(gt=0, le=65536)


class Body(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    disks: list[Disk] = []


probe = APIRouter(prefix="/api/kvmm-t-plat")


@probe.get("/not-found")
def raise_not_found() -> None:
    raise NotFound("no vm 'x'", field="vm")


@probe.post("/conflict")
def raise_conflict() -> None:
    raise Conflict("vm is running")


@probe.get("/unavailable")
def raise_unavailable() -> None:
    raise HostUnavailable("host local is reconnecting")


@probe.get("/crash")
def crash() -> None:
    raise RuntimeError("secret internal detail")


@probe.post("/crash", name="probe.crash")
def crash_write(body: dict) -> None:
    raise RuntimeError("secret internal detail")


@probe.post("/validate")
def validate(body: Body, count: int = 1) -> dict[str, int]:
    return {"count": count}


@pytest.fixture
def probe_client(settings: Settings) -> Iterator[TestClient]:
    app: FastAPI = create_app(settings)
    app.include_router(probe)
    with TestClient(app, raise_server_exceptions=False) as c:
        _, secret = app.state.manager.users.create_token("admin", "kvmm-t-plat-probe")
        c.headers["Authorization"] = f"Bearer {secret}"
        yield c


def test_kvmm_errors_keep_status_and_field(probe_client: TestClient) -> None:
    r = probe_client.get("/api/kvmm-t-plat/not-found")
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "not_found", "message": "no vm 'x'", "field": "vm"}}
    r = probe_client.post("/api/kvmm-t-plat/conflict")
    assert (r.status_code, r.json()["error"]["code"]) == (409, "conflict")
    assert "field" not in r.json()["error"]
    r = probe_client.get("/api/kvmm-t-plat/unavailable")
    assert (r.status_code, r.json()["error"]["code"]) == (503, "host_unavailable")


@pytest.mark.parametrize(
    ("body", "query", "field"),
    [
        ({"name": ""}, {}, "name"),
        ({"name": "x" * 65}, {}, "name"),
        ({}, {}, "name"),
        ({"name": "a", "disks": [{"size_gib": -1}]}, {}, "disks.0.size_gib"),
        ({"name": "a", "disks": [{"size_gib": 10**12}]}, {}, "disks.0.size_gib"),
        ({"name": "a"}, {"count": "many"}, "count"),
    ],
)
def test_validation_is_422_naming_the_field(
    probe_client: TestClient, body: dict, query: dict, field: str
) -> None:
    r = probe_client.post("/api/kvmm-t-plat/validate", json=body, params=query)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_input"
    assert err["field"] == field
    assert field in err["message"]


def test_malformed_json_is_422(probe_client: TestClient) -> None:
    r = probe_client.post(
        "/api/kvmm-t-plat/validate",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_input"


def test_unexpected_error_is_500_with_request_id_and_no_details(
    probe_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    r = probe_client.get("/api/kvmm-t-plat/crash")
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["code"] == "internal_error"
    assert "secret internal detail" not in r.text
    assert err["request_id"] in err["message"]
    assert any(err["request_id"] in rec.getMessage() for rec in caplog.records)


def test_unknown_route_and_method_use_the_same_shape(probe_client: TestClient) -> None:
    r = probe_client.get("/api/kvmm-t-plat/nothing-here")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    r = probe_client.delete("/api/health")
    assert (r.status_code, r.json()["error"]["code"]) == (405, "method_not_allowed")


def test_health_is_minimal(probe_client: TestClient) -> None:
    anon = TestClient(probe_client.app)
    r = anon.get("/api/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_openapi_is_served(probe_client: TestClient) -> None:
    anon = TestClient(probe_client.app)
    spec = anon.get("/api/openapi.json").json()
    assert "/api/auth/login" in spec["paths"]
    assert anon.get("/api/docs").status_code == 200


def test_a_crashing_write_is_audited_as_internal_error(probe_client: TestClient) -> None:
    r = probe_client.post("/api/kvmm-t-plat/crash", json={"token": "t"})
    assert r.status_code == 500
    [e] = probe_client.get("/api/audit", params={"action": "probe.crash"}).json()["items"]
    assert (e["result"], e["status"], e["error_code"]) == ("error", 500, "internal_error")
    assert e["params"] == {"token": "***"}


def test_malformed_json_says_where_and_what_not_a_byte_offset_as_field(client: TestClient) -> None:
    """Issue 17 item 11: a broken body answered `field: "52"` (a byte offset)."""
    r = client.post(
        "/api/hosts/local/vms",
        content=b'{"name": "kvmm-t-badjson",\n "memory_mib": 256,, "vcpus": 1}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422
    assert r.json()["error"] == {
        "code": "invalid_input",
        "message": "the request body is not valid JSON: "
        "Expecting property name enclosed in double quotes at line 2, column 20",
        "field": "body",
    }
