from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound
from kvmmanager.db.models import AuditEntry, Job
from kvmmanager.services.users import audit as audit_mod
from kvmmanager.services.users.audit import AuditRecord

DEADLINE = 60


async def _events_until_done(sub: Any, job_id: str) -> list[Any]:
    seen = []
    async with asyncio.timeout(DEADLINE):
        while True:
            ev = await sub.get()
            if ev.subject != job_id:
                continue
            seen.append(ev)
            if ev.kind == "job.done":
                return seen


async def test_sync_job_reports_progress_and_result(jobs_manager: Any) -> None:
    m = jobs_manager
    sub = m.bus.subscribe()

    def work(progress: Any) -> dict[str, int]:
        for i in range(1, 4):
            progress(i, 3, f"step {i}")
        return {"steps": 3}

    job_id = m.jobs.start("kvmm-t-plat.sync", "local/x", work, "admin", host="local")
    events = await _events_until_done(sub, job_id)
    job = await m.jobs.wait(job_id)
    assert (job.state, job.result, job.created_by) == ("done", {"steps": 3}, "admin")
    assert (job.progress_done, job.progress_total, job.message) == (3, 3, "step 3")
    assert events[-1].data["state"] == "done"
    assert events[-1].host == "local"
    assert any(e.kind == "job.progress" and e.data["done"] == 3 for e in events)


async def test_async_job_failure_is_recorded(jobs_manager: Any) -> None:
    m = jobs_manager

    async def work(progress: Any) -> None:
        progress(1, 2)
        raise InvalidInput("bad size", field="size")

    job_id = m.jobs.start("kvmm-t-plat.async", "t", work, None)
    job = await m.jobs.wait(job_id)
    assert job.state == "failed"
    assert job.error == {"code": "invalid_input", "message": "bad size", "field": "size"}


async def test_unexpected_exception_fails_job(jobs_manager: Any) -> None:
    def work(progress: Any) -> None:
        raise RuntimeError("boom")

    job = await jobs_manager.jobs.wait(jobs_manager.jobs.start("kvmm-t-plat.crash", "t", work))
    assert job.state == "failed" and job.error["code"] == "internal_error"


async def test_cancel_sets_flag_and_job_cleans_up(jobs_manager: Any) -> None:
    m = jobs_manager
    started = threading.Event()
    proceed = threading.Event()
    cleaned = threading.Event()

    def work(progress: Any) -> None:
        started.set()
        try:
            proceed.wait(DEADLINE)
            assert progress.cancelled()
            progress(1, 10)  # raises Cancelled once a cancel was requested
        finally:
            cleaned.set()

    job_id = m.jobs.start("kvmm-t-plat.cancel", "t", work, "admin")
    await asyncio.to_thread(started.wait, DEADLINE)
    m.jobs.cancel(job_id)
    proceed.set()
    job = await m.jobs.wait(job_id)
    assert job.state == "cancelled"
    assert cleaned.is_set()
    with pytest.raises(Conflict):
        m.jobs.cancel(job_id)
    with pytest.raises(NotFound):
        m.jobs.get("no-such-job")


async def test_list_filters(jobs_manager: Any) -> None:
    m = jobs_manager
    ids = [m.jobs.start("kvmm-t-plat.list", f"t{i}", lambda p: None, "bob") for i in range(3)]
    for job_id in ids:
        await m.jobs.wait(job_id)
    jobs, total = m.jobs.list(kind="kvmm-t-plat.list")
    assert total == 3 and {j.id for j in jobs} == set(ids)
    assert m.jobs.list(kind="kvmm-t-plat.list", state="running")[1] == 0
    assert m.jobs.list(user="alice")[1] == 0
    with pytest.raises(InvalidInput) as e:
        m.jobs.list(state="sleeping")
    assert e.value.field == "state"


async def test_request_audit_entry_written_with_the_job(jobs_manager: Any) -> None:
    """While a request is being audited, starting a job writes the entry (with the job id)
    in the job's own transaction, so neither exists without the other."""
    m = jobs_manager
    rec = AuditRecord(action="volumes.upload", username="admin", target="local/p/v")
    token = audit_mod.current_request.set(rec)
    gate = threading.Event()
    try:
        job_id = m.jobs.start("kvmm-t-plat.audit", "local/p/v", lambda p: gate.wait(DEADLINE))
    finally:
        audit_mod.current_request.reset(token)
    with m.db() as s:
        entry = s.get(AuditEntry, rec.entry_id)
        assert entry is not None and entry.job_id == job_id
        assert s.get(Job, job_id) is not None
    gate.set()
    await m.jobs.wait(job_id)
    page = m.audit.query(job_id=job_id)
    assert [(e.action, e.username) for e in page.items] == [("volumes.upload", "admin")]


async def test_start_from_worker_thread(jobs_manager: Any) -> None:
    m = jobs_manager
    job_id = await asyncio.to_thread(m.jobs.start, "kvmm-t-plat.thread", "t", lambda p: 42)
    job = await m.jobs.wait(job_id)
    assert (job.state, job.result) == ("done", 42)


async def test_interrupted_jobs_fail_on_restart(db_manager: Any) -> None:
    with db_manager.db.begin() as s:
        s.add(Job(id="kvmm-t-plat-stale", kind="x", target="", state="running"))
    db_manager.jobs.attach_loop(asyncio.get_running_loop())
    job = db_manager.jobs.get("kvmm-t-plat-stale")
    assert job.state == "failed" and job.error["code"] == "interrupted"


async def test_progress_held_back_by_the_rate_limit_is_delivered_later(jobs_manager: Any) -> None:
    """A burst of updates followed by a stall (a client holding its upload body back)
    still ends with the burst's LAST figures in the DB and on the bus."""
    m = jobs_manager
    sub = m.bus.subscribe()
    stall = threading.Event()

    def work(progress: Any) -> None:
        for i in range(1, 6):  # well within one rate-limit interval
            progress(i, 100, f"burst {i}")
        stall.wait(DEADLINE)

    job_id = m.jobs.start("kvmm-t-plat.stall", "t", work, "admin")
    try:
        async with asyncio.timeout(DEADLINE):
            while True:
                ev = await sub.get()
                if ev.subject == job_id and ev.kind == "job.progress" and ev.data["done"] == 5:
                    break
        # The event comes after the row was written.
        job = m.jobs.get(job_id)
        assert (job.state, job.progress_done, job.message) == ("running", 5, "burst 5")
    finally:
        stall.set()
    assert (await m.jobs.wait(job_id)).state == "done"


async def test_undo_records_add_up_and_end_with_the_job(jobs_manager: Any) -> None:
    m = jobs_manager
    recorded = threading.Event()
    gate = threading.Event()

    def work(progress: Any) -> None:
        progress.undo_on_interrupt("delete_volume", host="local", pool="p", volume="v")
        progress.undo_on_interrupt("undefine_domain", host="local", uuid="u", name="n")
        with pytest.raises(ValueError):
            progress.undo_on_interrupt("format_disk", host="local")
        recorded.set()
        gate.wait(DEADLINE)

    job_id = m.jobs.start("kvmm-t-plat.undo", "t", work, "admin")
    try:
        assert await asyncio.to_thread(recorded.wait, DEADLINE)
        assert [r["action"] for r in m.jobs.get(job_id).result["undo"]] == [
            "delete_volume",
            "undefine_domain",
        ]
    finally:
        gate.set()
    job = await m.jobs.wait(job_id)
    assert (job.state, job.result) == ("done", None)
