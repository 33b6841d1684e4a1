"""Backups made with libvirt's backup API: take, record, list, verify, restore, prune.

Reached as `manager.backups.images`. A policy with `method="backup"` runs `take` for each
of its VMs (see backups.py); the API and CLI also take one for one VM.

    r = await images.take(policy, "local", "web1")        # {"id", "kind", "volumes", ...}
    await images.verify(r["id"])                            # sha256 again + qcow2 headers
    await images.restore(r["id"], mode="new", name="web1-restored")
    await images.restore(r["id"], mode="original", confirm=True)   # VM must be shut off

Each backup is a row in `backups` (see db.ops_models.Backup); the volumes live in the
policy's pool, one qcow2 per disk (see rules.py for how an incremental chain reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import libvirt
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kvmmanager.core.errors import Conflict, InvalidInput, KvmmError, NotFound
from kvmmanager.db.ops_models import Backup
from kvmmanager.services.backups import copy_fallback as fb
from kvmmanager.services.backups import restore as rs
from kvmmanager.services.backups import take as tk
from kvmmanager.services.backups.retention import retained
from kvmmanager.services.backups.rules import (
    MAX_SAME_SECOND,
    Previous,
    checkpoint_name,
    choose_kind,
    incremental_refusal,
    prune,
    stamps,
    volume_name,
)
from kvmmanager.services.backups.verify import digest, header_problems
from kvmmanager.services.guest.agents import AgentService
from kvmmanager.services.storage.service import StorageService
from kvmmanager.services.vms.service import VmService
from kvmmanager.services.vms.spec import validate_name
from kvmmanager.virt.inventory import Inventory
from kvmmanager.virt.registry import HostRegistry

log = logging.getLogger(__name__)


def backup_dict(b: Backup) -> dict[str, Any]:
    return {
        "id": b.id,
        "policy": b.policy_name,
        "policy_id": b.policy_id,
        "host": b.host,
        "vm": b.vm_name,
        "vm_uuid": b.vm_uuid,
        "kind": b.kind,
        "parent_id": b.parent_id,
        "checkpoint": b.checkpoint,
        "pool": b.pool,
        "volumes": b.volumes,
        "size": b.size,
        "status": b.status,
        "consistency": b.consistency,
        "message": b.message,
        "created_by": b.created_by,
        "created_at": b.created_at,
        "finished_at": b.finished_at,
        "verified_at": b.verified_at,
        "verify_status": b.verify_status,
    }


def _never() -> bool:
    return False


class BackupImageService:
    def __init__(
        self,
        db: sessionmaker[Session],
        inventory: Inventory,
        registry: HostRegistry,
        agents: AgentService,
        storage: StorageService,
        vms: VmService,
    ) -> None:
        self._db = db
        # Public: a run hands this service to take.py and copy_fallback.py (BackupParts).
        self.inventory = inventory
        self.registry = registry
        self.agents = agents
        self.storage = storage
        self._vms = vms

    # ---- records ------------------------------------------------------------------------

    def list(
        self, host: str | None = None, vm: str | None = None, policy: str | None = None
    ) -> list[dict[str, Any]]:
        """Backups, newest first; `vm` matches the name or the UUID."""
        q = select(Backup).order_by(Backup.id.desc())
        if host is not None:
            q = q.where(Backup.host == host)
        if vm is not None:
            q = q.where((Backup.vm_name == vm) | (Backup.vm_uuid == vm))
        if policy is not None:
            q = q.where(Backup.policy_name == policy)
        with self._db() as s:
            return [backup_dict(b) for b in s.scalars(q)]

    def get(self, backup_id: int, host: str | None = None, vm: str | None = None) -> dict[str, Any]:
        """One backup; with `host`/`vm` it must be that VM's (404 otherwise)."""
        with self._db() as s:
            b = s.get(Backup, backup_id)
            if (
                b is None
                or (host is not None and b.host != host)
                or (vm is not None and vm not in (b.vm_name, b.vm_uuid))
            ):
                where = f" of vm '{vm}'" if vm else ""
                raise NotFound(f"backup {backup_id}{where} not found", field="backup")
            return {**backup_dict(b), "domain_xml": b.domain_xml}

    def _children(self, backup_id: int) -> list[int]:
        with self._db() as s:
            return list(s.scalars(select(Backup.id).where(Backup.parent_id == backup_id)))

    def _previous(self, policy_id: int, uuid: str) -> Previous | None:
        with self._db() as s:
            b = s.scalar(
                select(Backup)
                .where(Backup.policy_id == policy_id, Backup.vm_uuid == uuid, Backup.status == "ok")
                .order_by(Backup.id.desc())
            )
            if b is None:
                return None
            length, cur = 1, b
            while cur.parent_id is not None and length <= 1000:
                parent = s.get(Backup, cur.parent_id)
                if parent is None:
                    break
                length, cur = length + 1, parent
            disks = tuple(v["disk"] for v in b.volumes)
            return Previous(b.id, b.kind, b.checkpoint, length, disks)

    def _insert(self, **fields: Any) -> int:
        with self._db.begin() as s:
            row = Backup(**fields)
            s.add(row)
            s.flush()
            return row.id

    def _update(self, backup_id: int, **fields: Any) -> None:
        with self._db.begin() as s:
            row = s.get(Backup, backup_id)
            if row is not None:
                for k, v in fields.items():
                    setattr(row, k, v)

    # ---- take ---------------------------------------------------------------------------

    async def take(
        self,
        policy: dict[str, Any],
        host: str,
        vm: str,
        *,
        kind: str = "auto",
        progress: Any = None,
        created_by: str | None = None,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Back `vm` up into the policy's pool, then apply the policy's retention to the
        VM's backups. Bad input raises before anything is made."""
        if policy.get("method") not in ("backup", "copy") or not policy.get("pool"):
            raise InvalidInput(
                f"policy '{policy['name']}' makes snapshots, not backups into a pool "
                "(method 'backup' or 'copy' with a pool)",
                field="policy",
            )
        pool = policy["pool"]
        copy = policy["method"] == "copy"
        hc = self.registry.get(host)
        state = await hc.run(lambda: tk.inspect(hc.conn, host, vm), kind="read", op="inspect vm")
        prev = await asyncio.to_thread(self._previous, policy["id"], state.uuid)
        refusal = incremental_refusal(state.disks)
        if copy:
            refusal = f"method copy: full copies only ({fb.NOTE})"
        disks = tuple(d.target for d in state.disks)
        kind, parent, why = choose_kind(
            kind, policy["full_every"], refusal, prev, state.checkpoints, disks
        )
        when = (now or datetime.now(UTC)).astimezone(UTC)
        parent_vols: dict[str, str] = {}
        if parent is not None:
            prec = await asyncio.to_thread(self.get, parent.id)
            parent_vols = {v["disk"]: v["path"] for v in prec["volumes"]}
        # Names carry the second; a second backup within it takes the next free suffix.
        for stamp in stamps(when):
            targets = [
                tk.Target(
                    d.target,
                    volume_name(state.name, policy["name"], stamp, d.target),
                    capacity=d.capacity,
                    backing=parent_vols.get(d.target),
                )
                for d in state.disks
            ]
            cp = None if refusal else checkpoint_name(policy["name"], stamp)
            taken = await hc.run(
                lambda t=targets: tk.existing_targets(hc.conn, pool, t), kind="read"
            )
            if not taken and (cp is None or cp not in state.checkpoints):
                break
        else:
            raise Conflict(
                f"{MAX_SAME_SECOND} backups of vm '{state.name}' by policy "
                f"'{policy['name']}' in one second: try again",
                field="vm",
            )
        backup_id = await asyncio.to_thread(
            self._insert,
            policy_id=policy["id"],
            policy_name=policy["name"],
            host=host,
            vm_name=state.name,
            vm_uuid=state.uuid,
            kind=kind,
            parent_id=parent.id if parent else None,
            checkpoint=cp,
            pool=pool,
            volumes=[],
            size=0,
            status="running",
            domain_xml=state.xml,
            message=why,
            created_by=created_by,
            created_at=when,
        )
        try:
            try:
                if copy:
                    c, stats = await fb.run_copy(
                        self, hc, host, state, targets, pool, policy["quiesce"], when, progress
                    )
                else:
                    c, stats = await self._run_backup(
                        hc, host, state, targets, pool, cp, parent, policy, progress
                    )
            except tk.BackupApiRefused as exc:
                # Nothing of the refused attempt is left (_run_backup undid it): copy instead.
                why = f"full: {exc.message}; {fb.NOTE}"
                kind, parent, cp = "full", None, None
                await asyncio.to_thread(self._update, backup_id, kind=kind, parent_id=None,
                                        checkpoint=None, message=why)  # fmt: skip
                for t in targets:
                    t.backing, t.path = None, ""
                c, stats = await fb.run_copy(
                    self, hc, host, state, targets, pool, policy["quiesce"], when, progress
                )
            volumes = []
            for t in targets:
                d = await digest(hc, pool, t.volume)
                volumes.append(
                    {
                        "disk": t.disk,
                        "volume": t.volume,
                        "path": t.path,
                        "capacity": t.capacity,
                        "bytes": d.bytes,
                        "sha256": d.sha256,
                        "backing": t.backing,
                    }
                )
        except BaseException as exc:
            msg = exc.message if isinstance(exc, KvmmError) else repr(exc)
            await asyncio.shield(
                asyncio.to_thread(
                    self._update,
                    backup_id,
                    status="failed",
                    message=f"{why}; failed: {msg}",
                    finished_at=datetime.now(UTC),
                )
            )
            raise
        note = f"{why}; {refusal}" if refusal and kind == "full" and refusal != why else why
        await asyncio.to_thread(
            self._update,
            backup_id,
            status="ok",
            volumes=volumes,
            size=sum(v["bytes"] for v in volumes),
            consistency=c.to_dict(),
            message=note,
            finished_at=datetime.now(UTC),
        )
        result = await asyncio.to_thread(self.get, backup_id)
        result.pop("domain_xml")
        result["job"] = {k: stats.get(k) for k in ("time_elapsed", "disk_total", "disk_processed")}
        result["pruned"] = await self.apply_retention(policy, host, state.uuid)
        return result

    async def _run_backup(
        self,
        hc: Any,
        host: str,
        state: tk.VmState,
        targets: list[tk.Target],
        pool: str,
        cp: str | None,
        parent: Previous | None,
        policy: dict[str, Any],
        progress: Any,
    ) -> tuple[Any, dict[str, Any]]:
        made: list[str] = []
        started_paused = False
        began = False
        # libvirt copies in the background (a backup job of its own): every call here is
        # short and gets a deadline, unlike a copy the manager waits on.
        dom = await hc.run(
            lambda: hc.conn.lookupByUUIDString(state.uuid), kind="read", op="look up the vm"
        )
        cancelled = progress.cancelled if progress is not None else _never
        try:
            for t in targets:
                if hasattr(progress, "undo_on_interrupt"):
                    progress.undo_on_interrupt(
                        "delete_volume", host=host, pool=pool, volume=t.volume
                    )
                t.path = await hc.run(
                    lambda t=t: tk.create_target(hc.conn, pool, t),
                    kind="lifecycle",
                    op=f"create backup volume {t.volume}",
                )
                made.append(t.volume)
            if not state.running:
                await hc.run(dom.createWithFlags, libvirt.VIR_DOMAIN_START_PAUSED, kind="lifecycle")
                started_paused = True
            bxml = tk.backup_xml(state, targets, parent.checkpoint if parent else None)
            cxml = (
                tk.checkpoint_xml(state, cp, f"backup by policy {policy['name']}") if cp else None
            )

            async def start() -> None:
                nonlocal began
                await hc.run(tk.begin, dom, bxml, cxml, kind="lifecycle", op="begin the backup")
                began = True

            c = await tk.quiesced_begin(self, host, state, policy["quiesce"], start)
            if started_paused:
                c.method, c.level = "not-needed", "offline"
                c.message = "the vm was shut off: started paused for the backup, CPUs never ran"
            stats = await tk.wait_job(hc.run, dom, progress, cancelled)
        except BaseException:
            await asyncio.shield(self._undo(hc, dom, pool, made, cp if began else None, began))
            raise
        finally:
            if started_paused:
                with contextlib.suppress(Exception):
                    await asyncio.shield(hc.run(dom.destroy, kind="lifecycle"))
        with contextlib.suppress(KvmmError):
            await self.storage.sync_pool(host, pool)
        return c, stats

    async def _undo(
        self, hc: Any, dom: Any, pool: str, made: list[str], cp: str | None, began: bool
    ) -> None:
        if began:
            with contextlib.suppress(Exception):
                await hc.run(tk.abort, dom, kind="lifecycle", op="abort the backup")
                for _ in range(600):
                    if (
                        await hc.run(tk.job_progress, dom, kind="read", op="backup progress")
                        is None
                    ):
                        break
                    await asyncio.sleep(tk.POLL_SECONDS)
        if cp is not None:
            with contextlib.suppress(Exception):
                await hc.run(tk.delete_checkpoint, dom, cp, kind="lifecycle")
        left = await hc.run(tk.delete_volumes, hc.conn, pool, made, kind="lifecycle")
        for problem in left:
            log.warning("backup cleanup: %s", problem)

    # ---- retention / delete -------------------------------------------------------------

    async def apply_retention(self, policy: dict[str, Any], host: str, uuid: str) -> list[int]:
        """Delete the VM's backups the policy no longer keeps (whole chains only); failed
        attempts older than the newest good backup are forgotten."""

        def rows() -> list[dict[str, Any]]:
            with self._db() as s:
                q = select(Backup).where(Backup.policy_id == policy["id"], Backup.vm_uuid == uuid)
                return [backup_dict(b) for b in s.scalars(q)]

        items = await asyncio.to_thread(rows)
        ok = [b for b in items if b["status"] == "ok"]
        stamps = [(str(b["id"]), b["created_at"].timestamp()) for b in ok]
        keep = {
            int(i)
            for i in retained(
                stamps,
                policy["keep_last"],
                policy["keep_daily"],
                policy["keep_weekly"],
                policy["timezone"],
            )
        }
        gone, _ = prune(ok, keep)
        for bid in gone:
            await self.delete(bid)
        newest = max((b["id"] for b in ok), default=0)
        stale = [b["id"] for b in items if b["status"] == "failed" and b["id"] < newest]
        if stale:
            await asyncio.to_thread(self._forget, stale)
        return gone

    def _forget(self, ids: list[int]) -> None:
        with self._db.begin() as s:
            for i in ids:
                row = s.get(Backup, i)
                if row is not None:
                    s.delete(row)

    async def delete(
        self, backup_id: int, host: str | None = None, vm: str | None = None
    ) -> dict[str, Any]:
        """Delete a backup's volumes and its checkpoint, then its record. A backup an
        incremental is built on is refused (delete the incremental first)."""
        rec = await asyncio.to_thread(self.get, backup_id, host, vm)
        children = await asyncio.to_thread(self._children, backup_id)
        if children:
            raise Conflict(
                f"backup {backup_id} is the base of incremental backup(s) "
                f"{', '.join(map(str, children))}: delete those first",
                field="backup",
            )
        if rec["status"] == "running":
            raise Conflict(f"backup {backup_id} is still running", field="backup")
        hc = self.registry.get(rec["host"])
        if rec["checkpoint"]:
            await hc.run(lambda: _drop_checkpoint(hc.conn, rec["vm_uuid"], rec["checkpoint"]))
        left = await hc.run(
            tk.delete_volumes, hc.conn, rec["pool"], [v["volume"] for v in rec["volumes"]]
        )
        if left:
            raise Conflict(
                f"backup {backup_id}: volumes not deleted: {'; '.join(left)}", field="backup"
            )
        await asyncio.to_thread(self._forget, [backup_id])
        with contextlib.suppress(KvmmError):
            await self.storage.sync_pool(rec["host"], rec["pool"])
        return {"deleted": backup_id, "volumes": [v["volume"] for v in rec["volumes"]]}

    # ---- verify -------------------------------------------------------------------------

    async def verify(
        self,
        backup_id: int,
        host: str | None = None,
        vm: str | None = None,
        progress: Any = None,
    ) -> dict[str, Any]:
        """Read every volume back through a libvirt stream: sha256 against the recorded
        one, and a qcow2 header fit for its place in the chain."""
        rec = await asyncio.to_thread(self.get, backup_id, host, vm)
        if rec["status"] != "ok":
            raise Conflict(
                f"backup {backup_id} is {rec['status']}, not a finished backup", field="backup"
            )
        hc = self.registry.get(rec["host"])
        results, ok = [], True
        for i, v in enumerate(rec["volumes"]):
            if progress is not None:
                progress(i, len(rec["volumes"]), f"reading {v['volume']}")
            try:
                d = await digest(
                    hc,
                    rec["pool"],
                    v["volume"],
                    progress.cancelled if progress is not None else None,
                )
                problems = header_problems(d.header, int(v["capacity"]), v.get("backing"))
                if d.sha256 != v["sha256"]:
                    problems.insert(0, "sha256 differs from the one recorded at backup time")
                out = {
                    "disk": v["disk"],
                    "volume": v["volume"],
                    "sha256": d.sha256,
                    "expected": v["sha256"],
                    "bytes": d.bytes,
                    "header": d.header,
                }
            except NotFound as exc:
                problems = [f"volume is gone: {exc.message}"]
                out = {"disk": v["disk"], "volume": v["volume"]}
            out["problems"] = problems
            ok = ok and not problems
            results.append(out)
        status = "ok" if ok else "failed"
        await asyncio.to_thread(
            self._update, backup_id, verified_at=datetime.now(UTC), verify_status=status
        )
        return {"id": backup_id, "status": status, "volumes": results}

    # ---- restore ------------------------------------------------------------------------

    async def restore(
        self,
        backup_id: int,
        *,
        mode: str = "new",
        name: str | None = None,
        pool: str | None = None,
        start: bool = False,
        confirm: bool = False,
        host: str | None = None,
        vm: str | None = None,
        progress: Any = None,
        created_by: str | None = None,
    ) -> dict[str, Any]:
        rs.check_restore_args(mode, name, confirm)
        if mode == "new":
            validate_name(name, "name")
        rec = await asyncio.to_thread(self.get, backup_id, host, vm)
        if rec["status"] != "ok":
            raise Conflict(
                f"backup {backup_id} is {rec['status']}, not a finished backup", field="backup"
            )
        h = rec["host"]
        hc = self.registry.get(h)
        if mode == "new":
            assert name is not None
            copies = await hc.run(lambda: rs.plan_new(hc.conn, h, rec, name, pool or rec["pool"]))
        else:
            copies = await hc.run(lambda: rs.plan_over(hc.conn, h, rec))
        total = max(1, sum(c.capacity for c in copies))
        done = 0
        dropped: list[str] = []
        try:
            if mode == "original":
                dropped = await hc.run(lambda: rs.drop_checkpoints(hc.conn, rec["vm_uuid"]))
            for c in copies:
                if progress is not None:
                    progress(done, total, f"copying {c.disk}")
                    if mode == "new":
                        progress.undo_on_interrupt(
                            "delete_volume", host=h, pool=c.pool, volume=c.volume
                        )
                fn = rs.copy_one if mode == "new" else rs.replace_one
                c.path = await hc.run(lambda c=c, fn=fn: fn(hc.conn, c))
                done += c.capacity
            uuid = rec["vm_uuid"]
            if mode == "new":
                assert name is not None
                xml = rs.new_domain_xml(rec, name, copies, created_by)
                uuid = await hc.run(lambda: rs.define(hc.conn, xml, start))
            elif start:
                await hc.run(lambda: hc.conn.lookupByUUIDString(uuid).create())
        except BaseException:
            if mode == "new":
                await asyncio.shield(hc.run(lambda: rs.delete_copies(hc.conn, copies)))
            raise
        if progress is not None:
            progress(total, total, "done")
        for p in {c.pool for c in copies}:
            with contextlib.suppress(KvmmError):
                await self.storage.sync_pool(h, p)
        with contextlib.suppress(KvmmError):
            await self._vms.refresh(h, uuid)
        return {
            "backup": backup_id,
            "mode": mode,
            "host": h,
            "vm": name if mode == "new" else rec["vm"],
            "uuid": uuid,
            "volumes": [c.path for c in copies],
            "checkpoints_dropped": dropped,
            "started": start,
        }


def _drop_checkpoint(conn: libvirt.virConnect, uuid: str, name: str) -> None:
    try:
        dom = conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return  # the VM is gone, and its checkpoints with it
        raise
    tk.delete_checkpoint(dom, name)
