"""Batch actions: one lifecycle action on many VMs, with a result per VM.

The VMs are named explicitly (`host`/`vm` pairs) and/or selected by tag from the
inventory. They run with bounded concurrency (a host's worker pool and libvirtd stay
responsive), and one VM's failure is recorded in its result without stopping the others.

    res = await manager.batch.run("shutdown", targets=[Target("local", "web1")], tag="web")
    res["failed"]  # how many VMs did not do it; res["results"] says which and why

With `actor` (the caller), a VM owned by someone else is refused in its own result
unless the actor is an admin: the one ownership rule (services/users/ownership.py), which a
batch would otherwise walk around. Scheduled runs pass the schedule creator as the actor,
re-read when the schedule fires; only the service layer itself runs without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from kvmmanager.core.errors import InvalidInput, KvmmError, PermissionDenied
from kvmmanager.services.snapshots.service import SnapshotService
from kvmmanager.services.users.ownership import OwnershipService
from kvmmanager.services.users.service import Principal
from kvmmanager.services.vms.service import ShutdownMode, VmService
from kvmmanager.services.vms.spec import validate_tags
from kvmmanager.virt.inventory import Inventory

log = logging.getLogger(__name__)

LIFECYCLE = ("start", "shutdown", "destroy", "reboot", "reset", "suspend", "resume")
BATCH_ACTIONS = (*LIFECYCLE, "snapshot", "delete")
DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 16
MAX_TARGETS = 1000


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    vm: str


@dataclass(slots=True)
class ItemResult:
    host: str
    vm: str
    ok: bool
    state: str | None = None
    message: str = ""
    error: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Progress = Callable[..., Any]


class BatchService:
    def __init__(
        self,
        inventory: Inventory,
        ownership: OwnershipService,
        vms: VmService,
        snapshots: SnapshotService,
    ) -> None:
        self._inventory = inventory
        self._ownership = ownership
        self._vms = vms
        self._snapshots = snapshots

    @staticmethod
    def check(action: str, concurrency: int = DEFAULT_CONCURRENCY, mode: str = "auto") -> None:
        if action not in BATCH_ACTIONS:
            raise InvalidInput(f"action must be one of {', '.join(BATCH_ACTIONS)}", field="action")
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise InvalidInput(f"concurrency must be 1..{MAX_CONCURRENCY}", field="concurrency")
        if mode not in ("acpi", "agent", "auto"):
            raise InvalidInput("mode must be acpi, agent or auto", field="mode")

    def resolve(
        self,
        targets: Sequence[Target] = (),
        tag: str | None = None,
        host: str | None = None,
    ) -> list[Target]:
        """The VMs to act on: the named ones, then every VM carrying `tag` (on `host`
        only when given), each VM once. Unknown named VMs stay in the list: their own
        result says they were not found."""
        if tag is not None:
            try:
                tag = validate_tags([tag])[0]
            except InvalidInput as exc:
                raise InvalidInput(exc.message, field="tag") from None
        if not targets and tag is None:
            raise InvalidInput("name at least one vm or a tag", field="vms")
        out: list[Target] = []
        seen: set[tuple[str, str]] = set()

        def add(t: Target, key: str) -> None:
            if (t.host, key) not in seen:
                seen.add((t.host, key))
                out.append(t)

        for t in targets:
            if not t.host or not t.vm:
                raise InvalidInput("every vm needs a host and a name or uuid", field="vms")
            key = t.vm
            # Name and UUID of one VM count once.
            with contextlib.suppress(KvmmError):
                key = self._inventory.domain(t.host, t.vm).uuid
            add(t, key)
        if tag is not None:
            for d in self._inventory.domains(host):
                if tag in d.tags:
                    add(Target(d.host, d.name), d.uuid)
        if len(out) > MAX_TARGETS:
            raise InvalidInput(f"at most {MAX_TARGETS} vms per batch", field="vms")
        return out

    async def run(
        self,
        action: str,
        targets: Sequence[Target] = (),
        *,
        tag: str | None = None,
        host: str | None = None,
        mode: str = "auto",
        remove_volumes: bool = False,
        snapshot_name: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        progress: Progress | None = None,
        actor: Principal | None = None,
    ) -> dict[str, Any]:
        """Run `action` on every resolved VM; never raises for one VM's failure.

        `snapshot` names each snapshot `snapshot_name` (default: the snapshot service's
        time-stamped name), quiesced through an agent when one is there."""
        self.check(action, concurrency, mode)
        items = self.resolve(targets, tag, host)
        gate = asyncio.Semaphore(concurrency)
        done = 0
        if progress is not None:
            progress(0, len(items), f"{action}: 0/{len(items)}")

        async def one(t: Target) -> ItemResult:
            nonlocal done
            denied = self._refusal(t, actor)
            if denied is not None:
                res = ItemResult(
                    t.host, t.vm, False, message=denied.message, error=denied.to_dict()
                )
            else:
                async with gate:
                    res = await self._one(action, t, mode, remove_volumes, snapshot_name)
            done += 1
            if progress is not None:
                progress(done, len(items), f"{action}: {done}/{len(items)}")
            return res

        results = await asyncio.gather(*(one(t) for t in items))
        failed = sum(1 for r in results if not r.ok)
        return {
            "action": action,
            "total": len(results),
            "succeeded": len(results) - failed,
            "failed": failed,
            "results": [r.to_dict() for r in results],
        }

    def _refusal(self, t: Target, actor: Principal | None) -> PermissionDenied | None:
        if actor is None:
            return None
        return self._ownership.vm_refusal(actor, t.host, t.vm)

    async def _one(
        self, action: str, t: Target, mode: str, remove_volumes: bool, snapshot_name: str | None
    ) -> ItemResult:
        try:
            if action == "snapshot":
                snap = await self._snapshots.create(t.host, t.vm, name=snapshot_name)
                return ItemResult(
                    t.host,
                    t.vm,
                    True,
                    message=f"snapshot '{snap['name']}' taken",
                    details={"snapshot": snap["name"], "consistency": snap.get("consistency")},
                )
            if action == "delete":
                out = await self._vms.delete(t.host, t.vm, remove_volumes=remove_volumes)
                return ItemResult(
                    t.host,
                    t.vm,
                    True,
                    state="deleted",
                    message="deleted",
                    details={
                        k: v
                        for k, v in out.to_dict().items()
                        if k in ("uuid", "deleted_volumes", "kept_volumes")
                    },
                )
            # check() refused any other mode before the batch began.
            shutdown_mode = cast(ShutdownMode, mode)
            ref = await self._vms.action(t.host, t.vm, action, mode=shutdown_mode)
            return ItemResult(
                t.host, t.vm, True, state=ref.state, message=ref.message, details={"uuid": ref.uuid}
            )
        except KvmmError as exc:
            return ItemResult(t.host, t.vm, False, message=exc.message, error=exc.to_dict())
        except Exception as exc:
            # A bug for one VM must not lose the other VMs' results.
            log.exception("batch %s on %s/%s failed", action, t.host, t.vm)
            return ItemResult(
                t.host,
                t.vm,
                False,
                message=str(exc) or type(exc).__name__,
                error={"code": "internal_error", "message": str(exc) or type(exc).__name__},
            )
