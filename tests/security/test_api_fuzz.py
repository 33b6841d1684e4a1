"""Schemathesis over the app's full OpenAPI schema, as admin and as viewer, on the test
driver: no server errors, no response that violates the schema (status code, content
type, body), and a viewer changes nothing.

A third test sends each operation's first schema-valid JSON body twice more, mutated:
with a lone UTF-16 surrogate in a string (`"\\ud800"`, which JSON can carry and UTF-8
cannot) and with a 2 MiB string. Neither may be a server error, and the surrogate is
never accepted.

Every operation gets schema-valid ("positive") and schema-violating ("negative") cases.
KVMM_FUZZ_EXAMPLES raises the number of cases per operation and mode for a long run
(default 3: each role runs in well under a minute here).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES = int(os.environ.get("KVMM_FUZZ_EXAMPLES", "3"))
# Real objects of the test driver (and of the test): a third pass addresses them, so the
# cases reach the handlers instead of stopping at "not found".
REAL = {"host": "local", "vm": "test", "pool": "default-pool", "net": "default"}
CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)
# Server-sent event streams never end: a request would block the test. Their access
# control is covered by test_authz_matrix.py.
STREAMS = ("/api/events", "/metrics/stream")
# A fuzzed logout would end the very token the run uses.
SKIP_ALWAYS = ("/api/auth/logout",)
# A 503 naming one of these codes is the designed answer "the guest/host is not there"
# (documented on every route), not a server failure.
UNAVAILABLE = {"agent_unavailable", "host_unavailable"}
TRANSPORT_KEYS = ("method", "url", "headers", "params", "json", "content", "data", "files")
OVERSIZED = 2 * 1024 * 1024


def _mutants(case: Any) -> list[tuple[str, bytes]]:
    """(name, raw JSON body) variants of a schema-valid JSON object body."""
    body = case.body
    if not isinstance(body, dict) or "json" not in (case.media_type or ""):
        return []
    strings = [k for k, v in body.items() if isinstance(v, str)]
    key = strings[0] if strings else "kvmm_fuzz"
    surrogate = {**body, key: str(body.get(key, "")) + "\ud800"}
    oversized = {**body, key: "x" * OVERSIZED}
    # ensure_ascii: the surrogate travels as the escape `\ud800`, as an attacker sends it.
    return [
        ("lone-surrogate", json.dumps(surrogate).encode()),
        ("oversized", json.dumps(oversized).encode()),
    ]


def _send_mutant(c: TestClient, case: Any, content: bytes) -> Any:
    kw = case.as_transport_kwargs(base_url="http://testserver")
    headers = {
        k: v
        for k, v in (kw.get("headers") or {}).items()
        if k.lower() not in ("authorization", "content-type", "content-length")
    }
    headers["content-type"] = "application/json"
    return c.request(
        kw["method"], kw["url"], params=kw.get("params"), headers=headers, content=content
    )


@schemathesis.serializer("application/gzip", "application/x-tar")
def _raw_bytes(ctx: Any, value: Any) -> dict[str, Any]:
    # Bundle uploads are opaque bytes: send whatever was generated, as bytes.
    data = value if isinstance(value, bytes) else repr(value).encode()
    return {"data": data}


def _operations(c: TestClient) -> list[Any]:
    raw = c.get("/api/openapi.json").json()
    schema = schemathesis.openapi.from_dict(raw)
    ops = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path.endswith(STREAMS) or op.path in SKIP_ALWAYS:
            continue
        ops.append(op)
    assert len(ops) >= 60, "the schema lost its operations"
    return ops


def _send(c: TestClient, case: Any) -> Any:
    kw = case.as_transport_kwargs(base_url="http://testserver")
    kw = {k: v for k, v in kw.items() if k in TRANSPORT_KEYS}
    headers = {
        k: v for k, v in (kw.pop("headers", None) or {}).items() if k.lower() != "authorization"
    }
    return c.request(headers=headers, **kw)


def fuzz(
    c: TestClient,
    on_response: Callable[[Any, Any], None] | None = None,
    real: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run every operation through both generation modes, and schema-valid cases on real
    objects; return the findings."""
    real = {**REAL, **(real or {})}
    failures: Counter[tuple[str, str, str, int]] = Counter()
    examples: dict[tuple[str, str, str, int], str] = {}
    sent = 0
    statuses: Counter[int] = Counter()
    for op in _operations(c):
        pinned = {k: v for k, v in real.items() if "{" + k + "}" in op.path}
        passes = [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
        if pinned:
            passes.append((GenerationMode.POSITIVE, pinned))
        for mode, path_parameters in passes:

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=op.as_strategy(generation_mode=mode, path_parameters=path_parameters))
            def run(case: Any) -> None:
                nonlocal sent
                r = _send(c, case)
                sent += 1
                statuses[r.status_code] += 1
                if on_response is not None:
                    on_response(case, r)
                for check in CHECKS:
                    if check is not_a_server_error and _designed_unavailable(r):
                        continue
                    try:
                        case.validate_response(r, checks=[check])
                    except (AssertionError, FailureGroup) as exc:
                        key = (case.method.upper(), case.path, check.__name__, r.status_code)
                        failures[key] += 1
                        examples.setdefault(key, f"{case.as_curl_command()}\n{exc}"[:1500])

            try:
                run()
            except Unsatisfiable:
                # Nothing in this operation can be made invalid (no parameters, no body).
                assert mode is GenerationMode.NEGATIVE, op.label
    return {"sent": sent, "failures": failures, "examples": examples, "statuses": statuses}


def _designed_unavailable(r: Any) -> bool:
    if r.status_code != 503:
        return False
    try:
        return r.json()["error"]["code"] in UNAVAILABLE
    except (ValueError, KeyError, TypeError):
        return False


def _report(found: dict[str, Any]) -> str:
    lines = [f"{n}x {k}\n{found['examples'][k]}" for k, n in found["failures"].items()]
    return "\n\n".join(lines)


@pytest.mark.slow
def test_admin_fuzz_finds_no_server_error_and_no_schema_violation(
    role_client: Callable[[str], TestClient],
) -> None:
    admin = role_client("admin")
    other = role_client("operator")
    found = fuzz(admin, real={"username": other.kvmm_username})  # type: ignore[attr-defined]
    assert found["sent"] >= 500
    assert not found["failures"], _report(found)
    # The run reached the handlers, not only the auth layer.
    assert sum(n for s, n in found["statuses"].items() if s < 300) >= 50


@pytest.mark.slow
def test_viewer_fuzz_changes_nothing(
    role_client: Callable[[str], TestClient],
    state_snapshot: Callable[[], dict[str, Any]],
) -> None:
    viewer = role_client("viewer")
    me = viewer.kvmm_username  # type: ignore[attr-defined]
    writes_accepted: list[str] = []

    def watch(case: Any, r: Any) -> None:
        # Self-service writes touch only the viewer's own account (tokens, password).
        own = case.path.startswith(("/api/tokens", "/api/auth/"))
        if case.method.upper() != "GET" and r.status_code < 300 and not own:
            writes_accepted.append(f"{case.method} {case.formatted_path} -> {r.status_code}")

    def not_mine(snap: dict[str, Any]) -> dict[str, Any]:
        snap["/api/tokens?all"] = [t for t in snap["/api/tokens?all"] if t["username"] != me]
        return snap

    before = not_mine(state_snapshot())
    found = fuzz(viewer, watch)
    after = not_mine(state_snapshot())
    assert found["sent"] >= 500
    assert not found["failures"], _report(found)
    assert not writes_accepted, writes_accepted
    assert after == before
    # Writes were refused as forbidden, and reads were really answered.
    assert found["statuses"][403] >= 50
    assert found["statuses"][200] >= 50


@pytest.mark.slow
def test_lone_surrogates_and_oversized_bodies_are_refused_on_every_operation(
    role_client: Callable[[str], TestClient],
) -> None:
    admin = role_client("admin")
    sent: Counter[str] = Counter()
    failures: list[str] = []
    for op in _operations(admin):

        @settings(
            max_examples=1,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy(generation_mode=GenerationMode.POSITIVE))
        def run(case: Any) -> None:
            for name, content in _mutants(case):
                r = _send_mutant(admin, case, content)
                sent[name] += 1
                accepted = name == "lone-surrogate" and r.status_code < 300
                if accepted or (r.status_code >= 500 and not _designed_unavailable(r)):
                    failures.append(
                        f"{name}: {case.method} {case.path} -> {r.status_code} {r.text[:300]}"
                    )

        run()
    assert sent["lone-surrogate"] >= 30 and sent["oversized"] >= 30, sent
    assert not failures, "\n".join(failures)
