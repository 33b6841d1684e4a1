"""Reads are reads: every libvirt call a read-only service method makes gets the `read`
deadline (virt/calls.py), so a frozen libvirtd answers a listing with 504 after the read
deadline (seconds), not after the lifecycle one (a minute).

Each method runs for real on the test driver; the host's worker pool records the kind of
every call the test's own task makes (calls of background tasks, such as event re-reads,
are left out). A call that fails on the test driver (no DHCP leases there) still counts:
the kind is chosen before the call is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from tests.testdriver_cleanup import purge

from kvmmanager.core.errors import KvmmError
from kvmmanager.services.vms.pending import pending_changes
from kvmmanager.services.vms.spec import DiskSpec, VmSpec

HOST = "local"
VM = "test"  # test:///default's own domain
POOL = "default-pool"
NETWORK = "default"
PREFIX = "kvmm-t-kinds-"


def _reads(m: Any) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "vm xml": lambda: m.vms.xml(HOST, VM),
        "vm inactive xml": lambda: m.vms.xml(HOST, VM, inactive=True),
        "vm describe": lambda: m.vms.describe(HOST, VM),
        "vm pending changes": lambda: pending_changes(m.vms, HOST, VM),
        "vm export xml": lambda: m.export.export_xml(HOST, VM),
        "volume list": lambda: m.storage.list_volumes(HOST, POOL),
        "pool list": lambda: m.storage.list_pools(HOST),
        "pool get": lambda: m.storage.get_pool(HOST, POOL),
        "network list": lambda: m.networks.list(HOST),
        "network get": lambda: m.networks.get(HOST, NETWORK),
        "network leases": lambda: m.networks.leases(HOST, NETWORK),
        "snapshot list": lambda: m.snapshots.list(HOST, VM),
        "host devices": lambda: m.hostdevs.list(HOST),
        "vm host devices": lambda: m.hostdevs.of_vm(HOST, VM),
        "port forwards": lambda: m.port_forwards.list(HOST, VM),
        "templates": lambda: m.templates.list(HOST),
        "host health": lambda: m.doctor.check(HOST),
        "agent iso status": lambda: m.iso.status(HOST),
        "node info": lambda: m.hosts.info(HOST),
    }


class Recorder:
    """(op, kind) of each call the recording task sends to the host's workers, and
    (op) of every `job` call any task sends (background work never makes those)."""

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.seen: list[tuple[str, str]] = []
        self.unbounded: list[str] = []

    def start(self) -> None:
        """Record the calls of the current task (a fixture runs in another one)."""
        self.task = asyncio.current_task()
        self.seen.clear()


@pytest.fixture
async def recorder(manager: Any, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    hc = manager.registry.get(HOST)
    await hc.wait_connected(30)
    real = hc.workers.call
    rec = Recorder()

    async def record(
        fn: Any, *, op: str, kind: str, deadline: float | None, vm: str | None = None
    ) -> Any:
        if rec.task is not None and asyncio.current_task() is rec.task:
            rec.seen.append((op, kind))
        if kind == "job":
            rec.unbounded.append(op)
        return await real(fn, op=op, kind=kind, deadline=deadline, vm=vm)

    monkeypatch.setattr(hc.workers, "call", record)
    return rec


async def test_every_call_of_a_read_only_service_method_has_the_read_deadline(
    manager: Any, recorder: Recorder
) -> None:
    wrong: dict[str, list[tuple[str, str]]] = {}
    for what, read in _reads(manager).items():
        recorder.start()
        with contextlib.suppress(KvmmError):
            await read()
        assert recorder.seen, f"{what}: no libvirt call recorded (nothing tested)"
        if any(kind != "read" for _, kind in recorder.seen):
            wrong[what] = list(recorder.seen)
    assert wrong == {}


@pytest.fixture
async def source_vm(manager: Any) -> AsyncIterator[str]:
    """A VM with one disk in the test driver's pool; every domain and volume named with
    this module's prefix (it, its clone, their disks) is removed afterwards."""
    name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    spec = VmSpec(name=name, memory_mib=128, disks=[DiskSpec(pool=POOL, size_gib=1)])
    await manager.vms.create(HOST, spec)
    hc = manager.registry.get(HOST)
    try:
        yield name
    finally:
        await asyncio.to_thread(purge, PREFIX)
        left = await hc.run(
            lambda: (
                [v for v in hc.conn.storagePoolLookupByName(POOL).listVolumes()]
                + [d.name() for d in hc.conn.listAllDomains()]
            ),
            kind="read",
        )
        assert not [n for n in left if n.startswith(PREFIX)], left


async def test_in_a_clone_job_only_the_disk_copies_have_no_deadline(
    manager: Any, recorder: Recorder, source_vm: str
) -> None:
    """A job's calls default to no deadline (they may copy for minutes); the short ones
    around the copy (defining the clone, cleaning up) must not hang with a frozen host."""
    recorder.unbounded.clear()
    job_id = await manager.clones.start(HOST, source_vm, f"{source_vm}-c")
    async with asyncio.timeout(60):
        job = await manager.jobs.wait(job_id)
    assert job.state == "done", job.error
    assert recorder.unbounded, "no job call recorded (nothing tested)"
    assert all(op.startswith("copy disk ") for op in recorder.unbounded), recorder.unbounded
