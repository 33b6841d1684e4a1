"""A consistent full backup without libvirt's backup API: a temporary external snapshot,
a copy of the now read-only base, and an active block commit back into it.

Used by policies with `method="copy"`, and by `method="backup"` when libvirt refuses
`virDomainBackupBegin` as unsupported (VIR_ERR_NO_SUPPORT / VIR_ERR_OPERATION_UNSUPPORTED,
e.g. an older libvirt or QEMU, or a hypervisor driver without it).

1. per disk, a qcow2 overlay volume on the disk (backing: the disk's image) is created in
   the disk's own pool through the storage API;
2. a disk-only, metadata-less external snapshot switches the VM onto the overlays
   (REUSE_EXT, ATOMIC), the guest frozen around it when an agent can (the same rules as
   the backup API path: take.quiesced_begin); the base images stop changing;
3. each base is cloned into the policy's pool as a standalone qcow2 v3 volume through
   libvirt (`createXMLFrom`, which flattens any backing chain);
4. whatever happened in 3, each disk is actively committed back into its base and pivoted
   (`blockCommit` ACTIVE + `blockJobAbort` PIVOT), and the overlays are deleted, so the VM
   ends on its original image files; a failed copy also deletes its target volumes.

A stopped VM is started paused first (as for the backup API: the CPUs never run).
No incrementals: the copy is full every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import libvirt

from kvmmanager.core.errors import Cancelled, KvmmError, Unsupported
from kvmmanager.services.backups import take as tk
from kvmmanager.services.storage.xml import active_pool
from kvmmanager.virt.errors import libvirt_message
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.snapshot import DomainSnapshot, SnapshotDisk
from kvmmanager.virt.xml.volume import Volume

log = logging.getLogger(__name__)
REFUSED_CODES = (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_UNSUPPORTED)
COMMIT_POLL = 0.2
COMMIT_TIMEOUT = 3600.0  # a commit copies only what the guest wrote during the copy
NOTE = "copied from a temporary external snapshot, then block-committed back"


def refused(exc: libvirt.libvirtError) -> bool:
    return exc.get_error_code() in REFUSED_CODES


@dataclass
class Overlay:
    disk: str
    base: str  # the disk's image path, where the VM must end up again
    base_format: str
    pool: str
    volume: str
    path: str = ""


def make_overlays(conn: libvirt.virConnect, state: tk.VmState, when: datetime) -> list[Overlay]:
    """One qcow2 overlay per disk, in the disk's own pool (created through libvirt)."""
    out: list[Overlay] = []
    try:
        for d in state.disks:
            try:
                vol = conn.storageVolLookupByPath(d.source) if d.source else None
            except libvirt.libvirtError:
                vol = None
            if vol is None:
                raise Unsupported(
                    f"disk {d.target} is not a volume of a storage pool: the copy method "
                    "needs one for its temporary overlay",
                    field="vm",
                )
            pool = vol.storagePoolLookupByVolume()
            stem = os.path.splitext(vol.name())[0]
            name = f"{stem}.kvmm-copy-{when:%Y%m%d-%H%M%S}.qcow2"
            v = Volume(name=name, capacity=d.capacity, target_format="qcow2")
            v.allocation, v.compat = 0, "1.1"
            v.backing_path, v.backing_format = d.source, d.format
            o = Overlay(d.target, d.source, d.format, pool.name(), name)
            o.path = pool.createXML(v.to_xml(), 0).path()
            out.append(o)
    except BaseException:
        delete_overlays(conn, out)
        raise
    return out


def snapshot_xml(state: tk.VmState, overlays: list[Overlay]) -> str:
    snap = DomainSnapshot(name=f"kvmm-copy-{int(time.time())}")
    snap.description = "temporary: removed by block commit after the copy"
    snap.memory_snapshot = "no"
    for o in overlays:
        snap.add(SnapshotDisk(name=o.disk, snapshot="external", type="file",
                                       driver_type="qcow2", source_file=o.path))  # fmt: skip
    for s in state.skipped:
        if s:
            snap.add(SnapshotDisk(name=s, snapshot="no"))
    return snap.to_xml()


def take_snapshot(dom: libvirt.virDomain, xml: str) -> None:
    flags = (
        libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
        | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
        | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
    )
    try:
        dom.snapshotCreateXML(xml, flags)
    except libvirt.libvirtError as exc:
        raise KvmmError(f"the temporary snapshot failed: {libvirt_message(exc)}") from exc


def copy_base(conn: libvirt.virConnect, pool: str, t: tk.Target, o: Overlay) -> str:
    """Clone the (now read-only) base into the target pool as a standalone qcow2 v3."""
    base = conn.storageVolLookupByPath(o.base)
    v = Volume(name=t.volume, capacity=t.capacity, target_format="qcow2")
    v.compat = "1.1"
    try:
        path: str = active_pool(conn, pool).createXMLFrom(v.to_xml(), base, 0).path()
        return path
    except libvirt.libvirtError as exc:
        raise KvmmError(f"copying disk {t.disk} failed: {libvirt_message(exc)}") from exc


def disk_source(dom: libvirt.virDomain, target: str, flags: int = 0) -> str | None:
    xml = Domain.from_xml(dom.XMLDesc(flags))
    d = xml.devices.disk_by_target(target)
    return d.source_file if d is not None else None


def commit_step(dom: libvirt.virDomain, o: Overlay, started: bool) -> str:
    """One step of putting disk `o.disk` back on its base: "started", "waiting" or "done"."""
    if disk_source(dom, o.disk) == o.base:
        return "done"
    if not started:
        dom.blockCommit(o.disk, None, None, 0, libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE)
        return "started"
    info = dom.blockJobInfo(o.disk, 0)
    if not info:
        raise KvmmError(f"the block commit of {o.disk} ended without pivoting")
    if info.get("end", 0) and info.get("cur") != info.get("end"):
        return "waiting"
    try:
        dom.blockJobAbort(o.disk, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
    except libvirt.libvirtError as exc:
        # Not ready yet: the mirror phase has not converged, or it has (cur == end) but
        # QEMU's BLOCK_JOB_READY has not reached libvirt yet ("not ready for pivot yet",
        # VIR_ERR_BLOCK_COPY_ACTIVE). Both end by themselves: ask again.
        if exc.get_error_code() in (
            libvirt.VIR_ERR_OPERATION_INVALID,
            libvirt.VIR_ERR_BLOCK_COPY_ACTIVE,
        ):
            return "waiting"
        raise
    return "done" if disk_source(dom, o.disk) == o.base else "waiting"


async def commit(run: Any, dom: libvirt.virDomain, o: Overlay) -> None:
    deadline = time.monotonic() + COMMIT_TIMEOUT
    started = False
    while True:
        # Each step is short (start, look, pivot); the wait between them is ours.
        step = await run(commit_step, dom, o, started, kind="lifecycle", op=f"commit {o.disk}")
        if step == "done":
            return
        started = True
        if time.monotonic() > deadline:
            raise KvmmError(f"the block commit of {o.disk} did not finish in time")
        await asyncio.sleep(COMMIT_POLL)


def delete_overlays(conn: libvirt.virConnect, overlays: list[Overlay]) -> list[str]:
    left: list[str] = []
    for o in overlays:
        left += tk.delete_volumes(conn, o.pool, [o.volume])
    return left


async def run_copy(
    m: tk.BackupParts,
    hc: Any,
    host: str,
    state: tk.VmState,
    targets: list[tk.Target],
    pool: str,
    quiesce: str,
    when: datetime,
    progress: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """Copy every disk of the VM into `pool` as `targets` (standalone qcow2 volumes)."""
    # Only the copies of the disks (copy_base) run without a deadline; the short calls
    # around them (and each step of the block commits) have one, so a frozen host cannot
    # hang them.
    dom = await hc.run(
        lambda: hc.conn.lookupByUUIDString(state.uuid), kind="read", op="look up the vm"
    )
    total = max(1, sum(t.capacity for t in targets))
    started_paused = snapshotted = False
    overlays: list[Overlay] = []
    made: list[str] = []
    t0 = time.monotonic()

    def report(done: int, message: str) -> None:
        if progress is not None:
            with contextlib.suppress(KvmmError):
                progress(done, total, message)

    try:
        if not state.running:
            await hc.run(dom.createWithFlags, libvirt.VIR_DOMAIN_START_PAUSED, kind="lifecycle")
            started_paused = True
        overlays = await hc.run(
            lambda: make_overlays(hc.conn, state, when), kind="lifecycle", op="make overlays"
        )
        sxml = snapshot_xml(state, overlays)

        async def start() -> None:
            nonlocal snapshotted
            await hc.run(take_snapshot, dom, sxml, kind="lifecycle")
            snapshotted = True

        report(0, "temporary snapshot")
        c = await tk.quiesced_begin(m, host, state, quiesce, start)
        if started_paused:
            c.method, c.level = "not-needed", "offline"
            c.message = "the vm was shut off: started paused for the copy, CPUs never ran"
        done = 0
        by_disk = {o.disk: o for o in overlays}
        for t in targets:
            if progress is not None and progress.cancelled():
                raise Cancelled("the backup was cancelled")
            report(done, f"copying {t.disk}")
            if hasattr(progress, "undo_on_interrupt"):
                progress.undo_on_interrupt("delete_volume", host=host, pool=pool, volume=t.volume)
            made.append(t.volume)
            t.path = await hc.run(
                lambda t=t: copy_base(hc.conn, pool, t, by_disk[t.disk]),
                kind="job",
                op=f"copy disk {t.disk}",
            )
            done += t.capacity
        report(done, "block commit")
    except BaseException:
        await asyncio.shield(hc.run(tk.delete_volumes, hc.conn, pool, made, kind="lifecycle"))
        raise
    finally:
        await asyncio.shield(_restore(hc, dom, overlays, snapshotted, started_paused))
    report(total, "done")
    with contextlib.suppress(KvmmError):
        await m.storage.sync_pool(host, pool)
    return c, {"time_elapsed": int((time.monotonic() - t0) * 1000), "disk_total": total,
               "disk_processed": total}  # fmt: skip


async def _restore(
    hc: Any, dom: Any, overlays: list[Overlay], snapshotted: bool, started_paused: bool
) -> None:
    """Put every disk back on its base and remove the overlays; never raises, but what
    could not be undone is logged and, for a VM left on an overlay, raised afterwards by
    the check below."""
    stuck = []
    if snapshotted:
        for o in overlays:
            try:
                await commit(hc.run, dom, o)
            except Exception as exc:  # every disk gets its chance
                log.error("backup copy: disk %s stays on overlay %s: %s", o.disk, o.path, exc)
                stuck.append(o)
    if started_paused:
        with contextlib.suppress(Exception):
            await hc.run(dom.destroy, kind="lifecycle")
    left = await hc.run(
        delete_overlays, hc.conn, [o for o in overlays if o not in stuck], kind="lifecycle"
    )
    for problem in left:
        log.warning("backup copy cleanup: %s", problem)
    if stuck:
        raise KvmmError(
            "the block commit failed: disk(s) "
            + ", ".join(f"{o.disk} (on {o.path})" for o in stuck)
            + " still run on the temporary overlay; commit them with the VM's block jobs"
        )
