from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kvmmanager.core.errors import InvalidInput
from kvmmanager.services.users.audit import REDACTED, AuditRecord, redact


def test_redact_nested_secrets() -> None:
    data = {
        "name": "vm1",
        "password": "p",
        "vnc": {"passwd": "x", "port": 5900},
        "items": [{"api_token": "t", "size": 1}],
        "ssh_key": "k",
        "client_secret": "s",
    }
    assert redact(data) == {
        "name": "vm1",
        "password": REDACTED,
        "vnc": {"passwd": REDACTED, "port": 5900},
        "items": [{"api_token": REDACTED, "size": 1}],
        "ssh_key": REDACTED,
        "client_secret": REDACTED,
    }


def test_record_builds_params_from_query_and_json_body() -> None:
    rec = AuditRecord(action="vms.create", query={"host": "local"}, body_is_json=True)
    rec.body.extend(b'{"name": "a", "password": "hunter2"}')
    row = rec.to_row()
    assert row.params == {"host": "local", "name": "a", "password": REDACTED}


def test_query_filters_and_pagination(db_manager: Any) -> None:
    audit = db_manager.audit
    for i in range(5):
        audit.record(
            AuditRecord(
                action="vms.start" if i % 2 else "pools.create",
                username="alice" if i < 3 else "bob",
                target=f"local/vm{i}",
                result="ok" if i != 4 else "error",
                error_code=None if i != 4 else "conflict",
                status=200 if i != 4 else 409,
            )
        )
    assert audit.query().total == 5
    assert [e.target for e in audit.query(limit=2).items] == ["local/vm4", "local/vm3"]
    assert [e.target for e in audit.query(limit=2, offset=2).items] == ["local/vm2", "local/vm1"]
    assert audit.query(user="bob").total == 2
    assert audit.query(action="vms.start").total == 2
    assert audit.query(action="vms.*").total == 2
    assert audit.query(target="vm3").total == 1
    errors = audit.query(result="error")
    assert [(e.target, e.error_code, e.status) for e in errors.items] == [
        ("local/vm4", "conflict", 409)
    ]
    now = datetime.now(UTC)
    assert audit.query(since=now - timedelta(minutes=5)).total == 5
    assert audit.query(until=now - timedelta(minutes=5)).total == 0
    with pytest.raises(InvalidInput) as e:
        audit.query(limit=0)
    assert e.value.field == "limit"
    with pytest.raises(InvalidInput) as e:
        audit.query(result="maybe")
    assert e.value.field == "result"


def test_form_bodies_are_recorded_and_redacted() -> None:
    rec = AuditRecord(action="web.login", body_is_form=True)
    rec.body.extend(b"username=alice&password=s3cret&next=%2Fvms")
    assert rec.to_row().params == {"username": "alice", "password": REDACTED, "next": "/vms"}


def test_oversized_body_is_not_recorded() -> None:
    rec = AuditRecord(action="x", body_is_json=True, body_truncated=True)
    assert rec.to_row().params == {"body": "(too large to record)"}
