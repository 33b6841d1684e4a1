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
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from kvmmanager.core.errors import KvmmError
from kvmmanager.services.vm_pending import pending_changes

HOST = "local"
VM = "test"  # test:///default's own domain
POOL = "default-pool"
NETWORK = "default"


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
    """(op, kind) of each call the recording task sends to the host's workers."""

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.seen: list[tuple[str, str]] = []

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

    async def record(fn: Any, *, op: str, kind: str, deadline: float | None) -> Any:
        if rec.task is not None and asyncio.current_task() is rec.task:
            rec.seen.append((op, kind))
        return await real(fn, op=op, kind=kind, deadline=deadline)

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
