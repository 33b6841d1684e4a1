"""An anonymous flood cannot grow the audit log without bound: failed requests without a
user are budgeted per address and minute and their parameters truncated
(services/users/audit_budget.py, api/auditing.py); old entries are pruned by the server
(audit.retention_days)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

import pytest
from tests.security.anonymous.conftest import Served

from kvmmanager.core.config import AuditSettings

PER_ADDRESS = AuditSettings().anonymous_failures_per_minute_per_address
# The most an entry of a failed anonymous request can take (params truncated to 1 KiB,
# target to 512 characters, the rest a few short fields).
MAX_ENTRY_BYTES = 2048


def _audit_size(srv: Served) -> tuple[int, int]:
    with sqlite3.connect(f"file:{srv.data_dir / 'kvm-manager.db'}?mode=ro", uri=True) as db:
        rows, size = db.execute(
            "SELECT count(*), coalesce(sum(length(params) + length(target)"
            " + length(coalesce(username, ''))), 0) FROM audit_log"
        ).fetchone()
    return rows, size


@pytest.mark.slow
def test_an_anonymous_flood_grows_the_audit_log_by_a_bounded_amount_per_minute(
    serve: Callable[..., Served],
) -> None:
    """300 refused writes with 60 KB JSON bodies and 50 failed logins, from 5 addresses.
    The audit log grows by at most each address's budget per minute (plus one summary
    entry per address and minute), every entry small; it used to take all 350 with up to
    64 KB each."""
    srv = serve(env={"KVMM_AUDIT__PRUNE_INTERVAL_SECONDS": "1"})
    rows0, size0 = _audit_size(srv)
    sources = [f"127.0.1.{n}" for n in range(1, 6)]
    body = {"name": "x" * 60_000}
    start = time.time()
    for src in sources:
        with srv.client(source=src) as c:
            for _ in range(60):
                assert c.post("/api/hosts/local/vms", json=body).status_code == 401
            for i in range(10):
                r = c.post("/api/auth/login", json={"username": "admin", "password": f"g{i}"})
                assert r.status_code in (401, 429)
    end = time.time()
    rows1, size1 = _audit_size(srv)
    minutes = int(end // 60) - int(start // 60) + 1
    bound_rows = minutes * len(sources) * (PER_ADDRESS + 1)
    assert rows1 - rows0 <= bound_rows, (rows1 - rows0, bound_rows)
    assert size1 - size0 <= (rows1 - rows0) * MAX_ENTRY_BYTES, (size1 - size0, rows1 - rows0)
    # What was left out is counted: one summary per address once its minute is over.
    token = srv.admin_token()
    with srv.client(headers={"Authorization": f"Bearer {token}"}) as admin:
        deadline = time.monotonic() + 120
        while True:
            page = admin.get("/api/audit", params={"action": "audit.suppressed"}).json()
            counted = {e["remote_addr"] for e in page["items"]}
            if set(sources) <= counted or time.monotonic() > deadline:
                break
            time.sleep(1)
    assert set(sources) <= counted, page["items"]
    # The login attempts' entries still name the user they tried.
    with srv.client(headers={"Authorization": f"Bearer {token}"}) as admin:
        logins = admin.get("/api/audit", params={"action": "auth.login", "limit": 5}).json()
    assert logins["items"] and all(e["params"]["username"] == "admin" for e in logins["items"])


def test_entries_older_than_the_retention_are_pruned_by_the_server(
    serve: Callable[..., Served],
) -> None:
    """audit.retention_days (here 1, checked every second): an entry made 3 days old is
    deleted by the running server, newer ones stay."""
    srv = serve(env={"KVMM_AUDIT__RETENTION_DAYS": "1", "KVMM_AUDIT__PRUNE_INTERVAL_SECONDS": "1"})
    token = srv.admin_token()
    with srv.client(headers={"Authorization": f"Bearer {token}"}) as admin:
        for i in range(2):
            assert (
                admin.post("/api/tokens", json={"name": f"kvmm-t-secanon-{i}"}).status_code == 201
            )
        items = admin.get("/api/audit", params={"action": "tokens.create"}).json()["items"]
    old, new = items[0]["id"], items[1]["id"]
    db_path = srv.data_dir / "kvm-manager.db"
    with sqlite3.connect(db_path, timeout=30) as db:
        db.execute(
            "UPDATE audit_log SET ts = datetime('now', '-3 days') || '.000000' WHERE id = ?",
            (old,),
        )
    deadline = time.monotonic() + 60
    while True:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
            ids = {r[0] for r in db.execute("SELECT id FROM audit_log")}
        if old not in ids or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert old not in ids
    assert new in ids
