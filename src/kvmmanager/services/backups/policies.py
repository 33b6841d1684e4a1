"""Backup policies: snapshots, or backups into a pool, of a set of VMs with retention.

A run takes one snapshot per VM through the snapshot service (quiesced through a guest
agent when the policy and the VM allow it), named `<policy>-<YYYYmmdd-HHMMSS>` (UTC),
then prunes that VM's snapshots of this policy down to what the retention keeps: the
newest `keep_last`, plus the newest of each of the last `keep_daily` days and of the
last `keep_weekly` ISO weeks (days and weeks in the policy's time zone). Snapshots not
made by the policy are never touched. One VM's failure is in its result; the others go on.

`method="backup"` copies the VMs' disks into `pool` with libvirt's backup API instead
(a full backup every `full_every`, incrementals on checkpoints in between), records each
backup and prunes them with the same rules, whole chains at a time: see images.py.

    manager.backups.create(PolicySpec(name="nightly", tag="prod", keep_last=3, keep_daily=7))
    await manager.backups.run("nightly")
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kvmmanager.core.errors import Conflict, InvalidInput, KvmmError, NotFound
from kvmmanager.db.ops_models import BackupPolicy
from kvmmanager.services.automation.batch import BatchService, Target
from kvmmanager.services.automation.zones import zone
from kvmmanager.services.backups.images import BackupImageService
from kvmmanager.services.backups.retention import retained
from kvmmanager.services.backups.rules import MAX_FULL_EVERY
from kvmmanager.services.snapshots.quiesce import QUIESCE_REQUESTS
from kvmmanager.services.snapshots.service import SnapshotService
from kvmmanager.services.storage.specs import POOL_NAME_MAX, check_name
from kvmmanager.services.users import ownership
from kvmmanager.services.users.ownership import OwnershipService
from kvmmanager.services.users.service import Principal

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
# <policy>-YYYYmmdd-HHMMSS, with -N when two runs fall in the same second.
_STAMP = r"\d{8}-\d{6}(-\d)?"
MAX_SAME_SECOND = 9
MAX_KEEP = 1000
RUN_CONCURRENCY = 4


@dataclass
class PolicySpec:
    name: str
    vms: list[dict[str, str]] = field(default_factory=list)
    tag: str | None = None
    host: str | None = None
    keep_last: int = 7
    keep_daily: int = 0
    keep_weekly: int = 0
    timezone: str = "UTC"
    quiesce: str = "auto"
    method: str = "snapshot"
    pool: str | None = None
    full_every: int = 7


METHODS = ("snapshot", "backup", "copy")
# Methods that copy the disks into the policy's pool (rows of the `backups` table):
# "backup" with libvirt's backup API (falls back to "copy" when libvirt has none),
# "copy" with a temporary external snapshot and block commit (copy_fallback.py).
POOL_METHODS = ("backup", "copy")


def validate_policy(spec: PolicySpec) -> PolicySpec:
    if not _NAME_RE.fullmatch(spec.name or ""):
        raise InvalidInput(
            "name: 1-40 lowercase letters, digits, '_' or '-' (no '.')", field="name"
        )
    if not spec.vms and spec.tag is None:
        raise InvalidInput("name at least one vm or a tag", field="vms")
    for label in ("keep_last", "keep_daily", "keep_weekly"):
        if not 0 <= getattr(spec, label) <= MAX_KEEP:
            raise InvalidInput(f"{label} must be 0..{MAX_KEEP}", field=label)
    if spec.keep_last + spec.keep_daily + spec.keep_weekly == 0:
        raise InvalidInput("keep at least one snapshot (keep_last >= 1)", field="keep_last")
    if spec.quiesce not in QUIESCE_REQUESTS:
        raise InvalidInput(f"quiesce must be one of {', '.join(QUIESCE_REQUESTS)}", field="quiesce")
    if spec.method not in METHODS:
        raise InvalidInput(f"method must be one of {', '.join(METHODS)}", field="method")
    if spec.method in POOL_METHODS:
        if not spec.pool:
            raise InvalidInput("a backup policy needs the pool its backups go to", field="pool")
        check_name(spec.pool, "pool", POOL_NAME_MAX)
    if not 1 <= spec.full_every <= MAX_FULL_EVERY:
        raise InvalidInput(f"full_every must be 1..{MAX_FULL_EVERY}", field="full_every")
    zone(spec.timezone)
    return spec


def policy_dict(p: BackupPolicy) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "vms": p.targets,
        "tag": p.tag,
        "host": p.host,
        "keep_last": p.keep_last,
        "keep_daily": p.keep_daily,
        "keep_weekly": p.keep_weekly,
        "timezone": p.timezone,
        "quiesce": p.quiesce,
        "method": p.method,
        "pool": p.pool,
        "full_every": p.full_every,
        "last_run_at": p.last_run_at,
        "last_status": p.last_status,
        "created_by": p.created_by,
        "created_at": p.created_at,
    }


class BackupService:
    def __init__(
        self,
        db: sessionmaker[Session],
        owners: OwnershipService,
        batch: BatchService,
        snapshots: SnapshotService,
        images: BackupImageService,
    ) -> None:
        self._db = db
        self._owners = owners
        self._batch = batch
        self._snapshots = snapshots
        # Backups made with libvirt's backup API (policies with method 'backup').
        self.images = images

    def create(
        self, spec: PolicySpec, created_by: str | None = None, *, actor: Principal | None = None
    ) -> dict[str, Any]:
        """The VMs the policy names must be its creator's to act on (the ownership rule);
        every run checks each VM again, as whoever runs it."""
        spec = validate_policy(spec)
        if actor is None and created_by:
            actor = self._owners.acting_principal(created_by, f"policy '{spec.name}'")
        if actor is not None:
            self._owners.check_targets(actor, spec.vms)
        with self._db.begin() as s:
            if s.scalar(select(BackupPolicy.id).where(BackupPolicy.name == spec.name)):
                raise Conflict(f"a backup policy named '{spec.name}' already exists", field="name")
            row = BackupPolicy(
                name=spec.name, targets=spec.vms, tag=spec.tag, host=spec.host,
                keep_last=spec.keep_last, keep_daily=spec.keep_daily,
                keep_weekly=spec.keep_weekly, timezone=spec.timezone, quiesce=spec.quiesce,
                method=spec.method, pool=spec.pool, full_every=spec.full_every,
                created_by=created_by,
            )  # fmt: skip
            s.add(row)
            s.flush()
            return policy_dict(row)

    def replace(
        self, ident: str | int, spec: PolicySpec, actor: Principal | None = None
    ) -> dict[str, Any]:
        """Change a policy whole. Its name is part of its snapshots' names, so renaming
        leaves the snapshots of the old name alone (retention no longer prunes them).
        The VMs it names must be `actor`'s to act on."""
        spec = validate_policy(spec)
        if actor is not None:
            self._owners.check_targets(actor, spec.vms)
        with self._db.begin() as s:
            row = self._row(s, ident)
            if spec.name != row.name and s.scalar(
                select(BackupPolicy.id).where(BackupPolicy.name == spec.name)
            ):
                raise Conflict(f"a backup policy named '{spec.name}' already exists", field="name")
            row.name, row.targets, row.tag, row.host = spec.name, spec.vms, spec.tag, spec.host
            row.keep_last, row.keep_daily = spec.keep_last, spec.keep_daily
            row.keep_weekly, row.timezone, row.quiesce = (
                spec.keep_weekly,
                spec.timezone,
                spec.quiesce,
            )
            row.method, row.pool, row.full_every = spec.method, spec.pool, spec.full_every
            s.flush()
            return policy_dict(row)

    def _row(self, s: Any, ident: str | int) -> BackupPolicy:
        text = str(ident)
        row: BackupPolicy | None = s.scalar(
            select(BackupPolicy).where(
                BackupPolicy.id == int(text)
                if (text.isdigit() and len(text) < 19)
                else BackupPolicy.name == text
            )
        )
        if row is None:
            raise NotFound(f"backup policy '{ident}' not found", field="policy")
        return row

    def list(self) -> list[dict[str, Any]]:
        with self._db() as s:
            rows = s.scalars(select(BackupPolicy).order_by(BackupPolicy.name))
            return [policy_dict(p) for p in rows]

    def get(self, ident: str | int) -> dict[str, Any]:
        with self._db() as s:
            return policy_dict(self._row(s, ident))

    def delete(self, ident: str | int) -> None:
        """Forget the policy; the snapshots it made stay (delete them as snapshots)."""
        with self._db.begin() as s:
            s.delete(self._row(s, ident))

    async def run(
        self, ident: str | int, now: datetime | None = None, *, actor: Principal | None = None
    ) -> dict[str, Any]:
        """Snapshot every VM of the policy, then apply the retention to each. With
        `actor` (the caller, or a schedule's creator when it fires) the policy must be
        theirs and each VM another user owns is refused in its own result."""
        p = await asyncio.to_thread(self.get, ident)
        if actor is not None:
            ownership.check(actor, "policy", p["name"], p["created_by"])
        when = (now or datetime.now(UTC)).astimezone(UTC)
        name = f"{p['name']}-{when:%Y%m%d-%H%M%S}"
        targets = [Target(t["host"], t["vm"]) for t in p["vms"]]
        items = self._batch.resolve(targets, p["tag"], p["host"])
        gate = asyncio.Semaphore(RUN_CONCURRENCY)

        async def one(t: Target) -> dict[str, Any]:
            denied = None if actor is None else self._owners.vm_refusal(actor, t.host, t.vm)
            if denied is not None:
                return {"host": t.host, "vm": t.vm, "ok": False, "snapshot": None,
                        "pruned": [], "error": denied.to_dict()}  # fmt: skip
            async with gate:
                return await self._one(p, t, name)

        results = await asyncio.gather(*(one(t) for t in items))
        ok = sum(1 for r in results if r["ok"])
        status = "ok" if ok == len(results) and results else ("partial" if ok else "failed")
        await asyncio.to_thread(self._finish, p["id"], when, status)
        return {
            "policy": p["name"],
            "snapshot": name,
            "status": status,
            "total": len(results),
            "succeeded": ok,
            "failed": len(results) - ok,
            "results": results,
        }

    async def _one(self, p: dict[str, Any], t: Target, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"host": t.host, "vm": t.vm, "ok": False, "snapshot": None,
                               "pruned": [], "error": None}  # fmt: skip
        try:
            if p["method"] in POOL_METHODS:
                b = await self.images.take(p, t.host, t.vm)
                out.update(backup=b["id"], kind=b["kind"], consistency=b["consistency"],
                           pruned=[str(i) for i in b["pruned"]], ok=True)  # fmt: skip
                return out
            snap = await self._snapshot(t, name, p["quiesce"])
            out.update(snapshot=snap["name"], consistency=snap.get("consistency"))
            listed = await self._snapshots.list(t.host, t.vm)
            mine_re = re.compile(rf"^{re.escape(p['name'])}-{_STAMP}$")
            mine = [(s["name"], float(s["created"] or 0)) for s in listed["snapshots"]
                    if mine_re.fullmatch(s["name"])]  # fmt: skip
            keep = retained(mine, p["keep_last"], p["keep_daily"], p["keep_weekly"], p["timezone"])
            # Oldest first: each delete merges into what is newer.
            for old, _ in sorted(mine, key=lambda s: s[1]):
                if old not in keep:
                    await self._snapshots.delete(t.host, t.vm, old)
                    out["pruned"].append(old)
            out["kept"] = sorted(keep)
            out["ok"] = True
        except KvmmError as exc:
            out["error"] = exc.to_dict()
        return out

    async def _snapshot(self, t: Target, name: str, quiesce: str) -> dict[str, Any]:
        for i in range(MAX_SAME_SECOND + 1):
            try:
                return await self._snapshots.create(
                    t.host, t.vm, name=f"{name}-{i}" if i else name, quiesce=quiesce
                )
            except Conflict as exc:
                if exc.field != "name" or i == MAX_SAME_SECOND:
                    raise
        raise AssertionError("unreachable")

    async def backups_of(self, ident: str | int, host: str, vm: str) -> list[dict[str, Any]]:
        """The VM's snapshots made by this policy, oldest first."""
        p = await asyncio.to_thread(self.get, ident)
        mine_re = re.compile(rf"^{re.escape(p['name'])}-{_STAMP}$")
        listed = await self._snapshots.list(host, vm)
        return [s for s in listed["snapshots"] if mine_re.fullmatch(s["name"])]

    async def restore(
        self,
        ident: str | int,
        host: str,
        vm: str,
        snapshot: str,
        *,
        confirm: bool,
        actor: Principal | None = None,
    ) -> dict[str, Any]:
        """Put the VM back to one of this policy's backups, over its current state. What
        happened since is lost, hence `confirm`. The VM (named in the body, not the
        path) must be `actor`'s to change."""
        if actor is not None:
            self._owners.check_vm(actor, host, vm)
        if not confirm:
            raise InvalidInput(
                "restoring over the vm discards everything since the backup: confirm it",
                field="confirm",
            )
        if snapshot not in {s["name"] for s in await self.backups_of(ident, host, vm)}:
            raise NotFound(
                f"vm '{vm}' has no backup '{snapshot}' of policy '{ident}'", field="snapshot"
            )
        return await self._snapshots.revert(host, vm, snapshot)

    def _finish(self, policy_id: int, when: datetime, status: str) -> None:
        with self._db.begin() as s:
            row = s.get(BackupPolicy, policy_id)
            if row is not None:
                row.last_run_at, row.last_status = when, status
