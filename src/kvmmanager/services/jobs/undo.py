"""What a job killed mid-way (kill -9, power loss) had half made, removed at the next start.

A job records each object it is about to make with `JobProgress.undo_on_interrupt`
before making it (so a kill between the two leaves a record of something that is not
there: "never created"). The records stay in the job row while it runs and are
overwritten when it ends. At the next start the job is failed as `interrupted` and its
records are undone here, newest first (a VM's definition before the volumes it uses,
those before the snapshot they were copied under), once the host is connected again. The
outcome goes into the job's error message and an audit entry (`jobs.undo_interrupted`,
carrying the job id).

Actions:
- `delete_volume` (host, pool, volume): libvirt may still be writing it (a volume clone
  keeps running in libvirtd after its client died): deleting is retried while libvirt
  says the volume is busy. A volume some other VM uses is left in place.
- `undefine_domain` (host, uuid, name): the job chose the UUID before defining, so only
  its own definition can match; a running one is destroyed first.
- `delete_snapshot` (host, uuid, name, vm): the temporary external snapshot a clone of a
  running VM copies under (clones.CLONE_SNAPSHOT). Deleted through the snapshot service,
  as the clone's own `finally` would have: libvirt merges the overlay back into the
  original image (block commit and pivot for a running VM, offline commit for one shut
  off meanwhile) and removes the snapshot; the VM is found by its UUID.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import libvirt

from kvmmanager.core.errors import KvmmError
from kvmmanager.services.users.audit import AuditRecord, AuditService
from kvmmanager.services.vms.builder import undefine_flags
from kvmmanager.virt.inventory import Inventory
from kvmmanager.virt.registry import HostRegistry

log = logging.getLogger(__name__)

UNDO_ACTIONS = frozenset({"delete_volume", "undefine_domain", "delete_snapshot"})
# How long to wait for the host to come back, and for a busy volume to be released.
UNDO_WAIT_SECONDS = 120.0
_BUSY_RETRY_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class UndoTools:
    """What undoing a job needs, handed over by the Manager that builds the jobs service:
    the hosts, the inventory and the audit log, and three calls into services that sit
    above the jobs (storage, snapshots: they start jobs) as callbacks."""

    registry: HostRegistry
    inventory: Inventory
    audit: AuditService
    # (host, pool): re-read the pool into the inventory (StorageService.sync_pool).
    sync_pool: Callable[[str, str], Awaitable[None]]
    # (host, path, pool, volume): the VMs using the volume (volume_path_in_use_by).
    volume_users: Callable[[str, str, str, str], list[str]]
    # (host, vm, snapshot): delete it with its merge (SnapshotService.delete).
    delete_snapshot: Callable[[str, str, str], Awaitable[dict[str, Any]]]


@dataclass(slots=True)
class Interrupted:
    """A job found running at start: its id, target and what it recorded."""

    job_id: str
    target: str
    records: list[dict[str, Any]]


def normalize(undo: Any) -> list[dict[str, Any]]:
    """The records stored in a job row: a list, or one dict (the format before lists)."""
    if isinstance(undo, dict):
        return [undo]
    if isinstance(undo, list):
        return [r for r in undo if isinstance(r, dict)]
    return []


def describe(record: dict[str, Any]) -> str:
    if record.get("action") == "undefine_domain":
        return f"vm {record.get('name') or record.get('uuid')}"
    if record.get("action") == "delete_snapshot":
        return f"snapshot {record.get('name')} of vm {record.get('vm') or record.get('uuid')}"
    return f"volume {record.get('pool')}/{record.get('volume')}"


async def undo_job(tools: UndoTools, job: Interrupted, wait: float = UNDO_WAIT_SECONDS) -> str:
    """Undo one interrupted job's records, waiting up to `wait` seconds for its host;
    returns what happened, for the job's error message ("its half-made volume p/v:
    removed; ...")."""
    outcomes: list[str] = []
    removed = True
    for record in reversed(job.records):
        try:
            outcome = await _undo_one(tools, record, wait)
        except KvmmError as exc:
            outcome, removed = f"left in place: {exc.message}", False
        except Exception as exc:  # one record's surprise must not stop the others
            log.exception("interrupted job %s: undoing %s failed", job.job_id, record)
            outcome, removed = f"left in place: {type(exc).__name__}: {exc}", False
        if outcome.startswith("left in place"):
            removed = False
        log.warning("interrupted job %s: %s %s", job.job_id, describe(record), outcome)
        outcomes.append(f"{describe(record)}: {outcome}")
    message = "its half-made " + "; ".join(outcomes)
    await asyncio.to_thread(_audit, tools, job, outcomes, removed)
    return message


def _audit(tools: UndoTools, job: Interrupted, outcomes: list[str], ok: bool) -> None:
    tools.audit.record(
        AuditRecord(
            action="jobs.undo_interrupted",
            username=None,
            target=job.target,
            params={"by": "server start", "undone": outcomes},
            result="ok" if ok else "error",
            error_code=None if ok else "undo_incomplete",
            job_id=job.job_id,
        )
    )


async def _connected_host(tools: UndoTools, host: str, wait: float) -> Any:
    # Hosts are (re)connected by Manager.start right after the jobs are failed, and by
    # the connection's own retry loop after it was lost.
    deadline = time.monotonic() + wait
    while True:
        try:
            h = tools.registry.get(host)
            await h.wait_connected(5)
            return h
        except KvmmError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


async def _undo_one(tools: UndoTools, record: dict[str, Any], wait: float) -> str:
    action = record.get("action")
    host = str(record.get("host") or "")
    h = await _connected_host(tools, host, wait)
    if action == "undefine_domain":
        uuid = str(record.get("uuid") or "")
        outcome = await h.run(lambda: _undefine(h.conn, uuid))
        if outcome == "removed":
            tools.inventory.remove_domain(host, uuid)
        return outcome
    if action == "delete_volume":
        pool, volume = str(record.get("pool")), str(record.get("volume"))
        deadline = time.monotonic() + UNDO_WAIT_SECONDS
        while True:
            outcome = await h.run(lambda: _delete_volume(tools, host, h.conn, pool, volume))
            if outcome != "busy":
                break
            if time.monotonic() > deadline:
                return "left in place: libvirt still says it is in use"
            await asyncio.sleep(_BUSY_RETRY_SECONDS)
        if outcome == "removed":
            await tools.sync_pool(host, pool)
        return outcome
    if action == "delete_snapshot":
        uuid, name = str(record.get("uuid") or ""), str(record.get("name") or "")
        missing = await h.run(lambda: _snapshot_missing(h.conn, uuid, name))
        if missing:
            return missing
        # The service the clone uses: same merge (and same fallbacks) as its `finally`.
        done = await tools.delete_snapshot(host, uuid, name)
        return f"removed ({done['merge']})"
    return f"left in place: unknown undo action {action!r}"


def _domain(conn: libvirt.virConnect, uuid: str) -> libvirt.virDomain | None:
    """The domain with `uuid`, or None when libvirt has none."""
    try:
        return conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def _undefine(conn: libvirt.virConnect, uuid: str) -> str:
    dom = _domain(conn, uuid)
    if dom is None:
        return "not there (never defined)"
    if dom.isActive():
        dom.destroy()
    if dom.isPersistent():
        dom.undefineFlags(undefine_flags(dom))
    return "removed"


def _snapshot_missing(conn: libvirt.virConnect, uuid: str, name: str) -> str | None:
    """Why there is nothing to delete, or None when the snapshot is there."""
    dom = _domain(conn, uuid)
    if dom is None:
        return "not there (its vm is gone)"
    try:
        dom.snapshotLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            return "not there (never created)"
        raise
    return None


def _delete_volume(
    tools: UndoTools, host: str, conn: libvirt.virConnect, pool: str, name: str
) -> str:
    try:
        vol = conn.storagePoolLookupByName(pool).storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        missing = (libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_STORAGE_POOL)
        if exc.get_error_code() in missing:
            return "not there (never created)"
        raise
    users = tools.volume_users(host, vol.path(), pool, name)
    if users:
        return f"left in place: used by VM(s) {', '.join(users)}"
    try:
        vol.delete(0)
    except libvirt.libvirtError as exc:
        # "still being allocated" (a clone libvirtd is still copying), "still in use"
        # (a stream libvirtd has not closed yet): both end by themselves.
        if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
            return "busy"
        raise
    return "removed"
