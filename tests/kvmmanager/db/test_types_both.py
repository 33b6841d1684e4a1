"""The same rows read back the same on SQLite and PostgreSQL: aware UTC datetimes from
any time zone, JSON (nested, unicode, big integers), UUIDs (text ids, 16-byte keys of
the metric history) and 64-bit counters."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import select

from kvmmanager.db import migrate
from kvmmanager.db.base import make_engine, make_session_factory
from kvmmanager.db.metrics_models import MetricSample
from kvmmanager.db.models import Job


def test_rows_round_trip_the_same(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    sessions = make_session_factory(engine)
    paris = timezone(timedelta(hours=1))
    created = datetime(2026, 12, 6, 23, 30, 15, 123456, tzinfo=paris)
    naive = datetime(2026, 1, 2, 3, 4, 5)  # naive means UTC in this product
    body = {"name": "vm-ü✓", "sizes": [1, 2**53 + 1], "nested": {"ok": True, "none": None}}
    job_id = str(uuid.uuid4())
    vm = uuid.uuid4()
    with sessions.begin() as s:
        s.add(Job(id=job_id, kind="k", result=body, progress_total=5 * 2**40,
                  created_at=created, updated_at=naive))  # fmt: skip
        s.add(MetricSample(host="local", vm_uuid=vm.bytes, step=300, ts=1_765_000_200,
                            cpu_pct=12.5))  # fmt: skip
    with sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert job.created_at == created and job.created_at.tzinfo == UTC
        assert job.updated_at == naive.replace(tzinfo=UTC)
        assert job.result == body
        assert job.progress_total == 5 * 2**40
        row = s.scalar(select(MetricSample).where(MetricSample.vm_uuid == vm.bytes))
        assert row is not None and uuid.UUID(bytes=bytes(row.vm_uuid)) == vm
        assert row.ts == 1_765_000_200 and row.cpu_pct == 12.5
    engine.dispose()
