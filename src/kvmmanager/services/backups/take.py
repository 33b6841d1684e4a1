"""Taking one backup with libvirt's backup API (push mode), as blocking steps on the
host's worker threads plus the async loop that drives them.

1. inspect the VM (disks, their qcow2 version, its checkpoints);
2. create one qcow2 target volume per disk in the policy's pool through the storage API
   (an incremental's is an overlay on its parent backup's volume, see rules.py);
3. freeze the guest (the project's agent, or qemu-guest-agent through libvirt), call
   `virDomainBackupBegin` with a new checkpoint, thaw at once: the backup's point in time
   is fixed when the job starts, QEMU copies the old data of any block written later
   before letting the write through (copy-before-write);
4. follow the job with `jobStats` (progress) until it ends; a cancel is `abortJob`;
5. anything that failed removes the target volumes and the checkpoint it created.

A stopped VM is started paused for the backup (libvirt 9.0 backs up running domains
only; the CPUs never run, so the disks do not change) and powered off afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import libvirt

from kvmmanager.core.errors import Cancelled, Conflict, GuestError, KvmmError, Unsupported
from kvmmanager.services.backups.rules import DiskPlan, backup_disks
from kvmmanager.services.guest.agents import AgentService
from kvmmanager.services.snapshots import quiesce as qz
from kvmmanager.services.storage.service import StorageService
from kvmmanager.services.storage.xml import active_pool, build_volume_xml, volume_exists
from kvmmanager.services.vms.builder import lookup
from kvmmanager.virt.errors import libvirt_message
from kvmmanager.virt.inventory import Inventory
from kvmmanager.virt.registry import HostRegistry
from kvmmanager.virt.xml.backup import BackupDisk, CheckpointDisk, DomainBackup, DomainCheckpoint
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.metadata import NS_URI, ManagerMetadata
from kvmmanager.virt.xml.volume import Volume


class BackupParts(Protocol):
    """What a backup run uses besides the VM's host connection (BackupImageService has
    them): the guest agents to freeze, the inventory for their state, the pools to sync."""

    @property
    def inventory(self) -> Inventory: ...
    @property
    def agents(self) -> AgentService: ...
    @property
    def registry(self) -> HostRegistry: ...
    @property
    def storage(self) -> StorageService: ...


log = logging.getLogger(__name__)
POLL_SECONDS = 0.5
RUNNING = (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_PAUSED)


@dataclass
class VmState:
    uuid: str
    name: str
    xml: str  # inactive definition
    running: bool
    persistent: bool
    disks: list[DiskPlan]
    skipped: list[str]
    checkpoints: set[str]
    quiesce_policy: str | None


@dataclass
class Target:
    disk: str
    volume: str
    path: str = ""
    capacity: int = 0
    backing: str | None = None


@dataclass
class Outcome:
    targets: list[Target]
    checkpoint: str | None
    started_paused: bool = False
    stats: dict[str, Any] = field(default_factory=dict)


class BackupApiRefused(Unsupported):
    """libvirt has no backup API for this VM: the copy method (copy_fallback.py) can do
    it instead."""


def _compat(conn: libvirt.virConnect, path: str) -> str | None:
    try:
        vol = conn.storageVolLookupByPath(path)
    except libvirt.libvirtError:
        return None
    compat = Volume.from_xml(vol.XMLDesc(0)).compat
    # libvirt reports <compat> for qcow2 volumes only; its absence on qcow2 means v2.
    return compat or "0.10"


def inspect(conn: libvirt.virConnect, host: str, vm: str) -> VmState:
    dom = lookup(conn, host, vm)
    xml = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    disks, skipped = backup_disks(xml)
    if dom.isActive():
        # A device added to the definition only (a CD-ROM drive that could not be
        # hot-plugged) is not in the running domain, which libvirt's backup names
        # disks against ("no disk named 'hda'"): leave it out of the list to skip.
        live = {d.target_dev for d in Domain.from_xml(dom.XMLDesc(0)).devices.disks}
        skipped = [s for s in skipped if s in live]
    if not disks:
        raise Unsupported(f"vm '{dom.name()}' has no writable disk to back up", field="vm")
    for d in disks:
        d.capacity = int(dom.blockInfo(d.target)[0])
        if d.source and d.format == "qcow2":
            d.compat = _compat(conn, d.source)
    try:
        meta = ManagerMetadata.from_metadata_api(
            dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS_URI, 0)
        )
        policy = meta.agent_quiesce
    except libvirt.libvirtError:
        policy = None
    return VmState(
        uuid=dom.UUIDString(),
        name=dom.name(),
        xml=xml.to_xml(),
        running=dom.state()[0] in RUNNING,
        persistent=bool(dom.isPersistent()),
        disks=disks,
        skipped=skipped,
        checkpoints={c.getName() for c in dom.listAllCheckpoints()},
        quiesce_policy=policy,
    )


def existing_targets(conn: libvirt.virConnect, pool: str, targets: list[Target]) -> list[str]:
    """The target volume names already taken in `pool`."""
    p = active_pool(conn, pool)
    return [t.volume for t in targets if volume_exists(p, t.volume)]


def create_target(conn: libvirt.virConnect, pool: str, t: Target) -> str:
    """The backup's qcow2 v3 target volume; an overlay on `t.backing` for an incremental."""
    backing = (t.backing, "qcow2") if t.backing else None
    xml = build_volume_xml(t.volume, t.capacity, "qcow2", backing=backing)
    path: str = active_pool(conn, pool).createXML(xml, 0).path()
    return path


def delete_volumes(conn: libvirt.virConnect, pool: str, names: list[str]) -> list[str]:
    """Delete what exists of `names`; answers what could not be deleted."""
    left = []
    try:
        p = conn.storagePoolLookupByName(pool)
    except libvirt.libvirtError as exc:
        return [f"{pool}/{n}: {libvirt_message(exc)}" for n in names]
    for n in names:
        try:
            p.storageVolLookupByName(n).delete(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                left.append(f"{pool}/{n}: {libvirt_message(exc)}")
    with contextlib.suppress(libvirt.libvirtError):
        p.refresh(0)
    return left


def delete_checkpoint(dom: libvirt.virDomain, name: str) -> None:
    """Delete a checkpoint; libvirt merges its bitmap into its parent's so the changes it
    tracked still count for the checkpoints that remain. A VM that is not running cannot
    merge bitmaps: then only the metadata goes, and the stale bitmap with it at the next
    full restore."""
    try:
        cp = dom.checkpointLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_CHECKPOINT:
            return
        raise
    try:
        cp.delete(0)
    except libvirt.libvirtError as exc:
        log.info("checkpoint %s of %s: %s; deleting its metadata only", name, dom.name(), exc)
        cp.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)


def backup_xml(state: VmState, targets: list[Target], incremental: str | None) -> str:
    b = DomainBackup(mode="push", incremental=incremental)
    for t in targets:
        b.add(
            BackupDisk(
                name=t.disk, backup="yes", type="file", target_file=t.path, driver_type="qcow2"
            )
        )
    for name in state.skipped:
        if name:
            b.add(BackupDisk(name=name, backup="no"))
    return b.to_xml()


def checkpoint_xml(state: VmState, name: str, description: str) -> str:
    cp = DomainCheckpoint(name=name, description=description)
    for d in state.disks:
        cp.add(CheckpointDisk(name=d.target, checkpoint="bitmap"))
    for s in state.skipped:
        if s:
            cp.add(CheckpointDisk(name=s, checkpoint="no"))
    return cp.to_xml()


def begin(dom: libvirt.virDomain, bxml: str, cxml: str | None) -> None:
    try:
        dom.backupBegin(bxml, cxml, libvirt.VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL)
    except libvirt.libvirtError as exc:
        code = exc.get_error_code()
        if code in (libvirt.VIR_ERR_OPERATION_INVALID,):
            raise Conflict(
                f"libvirt refused the backup: {libvirt_message(exc)}", field="vm"
            ) from exc
        if code in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_UNSUPPORTED):
            # The caller falls back to a copy (temporary snapshot + block commit).
            raise BackupApiRefused(
                f"libvirt's backup API is not available: {libvirt_message(exc)}", field="vm"
            ) from exc
        raise Unsupported(
            f"libvirt's backup API refused this backup: {libvirt_message(exc)}", field="vm"
        ) from exc


def job_progress(dom: libvirt.virDomain) -> dict[str, Any] | None:
    """The running backup job's stats, or None once no job runs."""
    stats: dict[str, Any] = dom.jobStats(0)
    if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
        return None
    return stats


def job_result(dom: libvirt.virDomain) -> dict[str, Any]:
    """The finished job's stats; raises when it did not succeed."""
    stats: dict[str, Any] = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    if stats.get("operation") not in (None, libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP):
        raise KvmmError("the backup job's result was replaced by another job's")
    if stats.get("type") != libvirt.VIR_DOMAIN_JOB_COMPLETED or not stats.get("success", True):
        raise KvmmError(f"the backup job failed: {stats.get('errmsg') or 'no reason given'}")
    return stats


def abort(dom: libvirt.virDomain) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        dom.abortJob()


async def wait_job(
    run: Any, dom: libvirt.virDomain, progress: Any, cancelled: Any
) -> dict[str, Any]:
    """Follow the job until it ends; a cancel aborts it and waits for the end. The copy
    runs inside libvirt: every call here is short and has a deadline (`run` is a host's
    HostConnection.run), so a frozen host fails the backup instead of hanging it."""
    aborted = False
    while True:
        stats = await run(job_progress, dom, kind="read", op="backup progress")
        if stats is None:
            break
        if not aborted and cancelled():
            await run(abort, dom, kind="lifecycle", op="abort the backup")
            aborted = True
        if progress is not None and not aborted:
            total = int(stats.get("disk_total") or 0)
            done = int(stats.get("disk_processed") or 0)
            with contextlib.suppress(KvmmError):
                progress(done, max(total, 1), "copying")
        await asyncio.sleep(POLL_SECONDS)
    if aborted:
        raise Cancelled("the backup was cancelled (libvirt aborted the job)")
    result: dict[str, Any] = await run(job_result, dom, kind="read", op="backup result")
    return result


async def quiesced_begin(
    m: BackupParts, host: str, state: VmState, request: str, start: Any
) -> qz.Consistency:
    """Freeze (when an agent is there and `request` allows), start the job, thaw."""
    try:
        d = m.inventory.domain(host, state.uuid)
        agent, qga = d.agent_status or "absent", d.qga_status or "absent"
    except KvmmError:
        agent = qga = "absent"
    c = qz.choose(request, state.quiesce_policy, state.running, False, agent, qga)
    if c.method == "qemu-ga":
        c = await _qga_frozen(m, host, state, c, start, request == "require")
        return c

    async def freeze(limit: float) -> Any:
        usage = await m.agents.call(host, state.uuid, "get_disk_usage")
        mounts = qz.freezable(usage.get("filesystems") or [])
        if not mounts:
            raise GuestError("the guest has no freezable filesystem", field="quiesce")
        params = {"timeout_seconds": limit, "mount_points": mounts}
        return await m.agents.call(host, state.uuid, "fsfreeze_freeze", params)

    await qz.frozen(
        c,
        freeze,
        lambda: m.agents.fsfreeze(host, state.uuid, "thaw"),
        start,
        required=request == "require",
    )
    return c


async def _qga_frozen(
    m: BackupParts, host: str, state: VmState, c: qz.Consistency, start: Any, required: bool
) -> qz.Consistency:
    """qemu-guest-agent through libvirt's fsFreeze/fsThaw (the backup API of libvirt 9.0
    has no quiesce flag of its own)."""
    hc = m.registry.get(host)
    dom = await hc.run(lambda: hc.conn.lookupByUUIDString(state.uuid))
    try:
        await hc.run(dom.fsFreeze, None, 0)
    except KvmmError as exc:
        if required:
            raise
        c.method, c.level = "none", "crash-consistent"
        c.message = f"not quiesced: qemu-guest-agent could not freeze ({exc.message})"
        await start()
        return c
    try:
        await start()
    finally:
        try:
            await hc.run(dom.fsThaw, None, 0)
            c.message = "frozen by qemu-guest-agent via libvirt, thawed once the job started"
        except KvmmError as exc:
            c.message = f"frozen by qemu-guest-agent; thaw failed: {exc.message}"
    return c
