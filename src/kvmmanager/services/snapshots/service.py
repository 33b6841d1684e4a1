"""VM snapshots through libvirt: create (internal or external, quiesced when possible),
list as a tree, revert, delete; the per-VM quiesce policy.

    svc = manager.snapshots
    r = await svc.create("local", "web1", name="pre-upgrade")        # kind picked for you
    r["consistency"]   # {"method": "kvmm-agent", "level": "quiesced", ...}
    await svc.list("local", "web1")         # {"snapshots": [...], "tree": [...], "current": ...}
    await svc.revert("local", "web1", "pre-upgrade")
    await svc.delete("local", "web1", "pre-upgrade")
    await svc.set_quiesce_policy("local", "web1", "never")

Deleting an external snapshot is libvirt's own delete, which merges the overlay with a
block commit (running VM) or qemu-img commit (stopped VM) before removing it; the
product never removes an image file itself. See snapshots/rules.py for what is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from kvmmanager.core.errors import Conflict, GuestError, InvalidInput, KvmmError, NotFound
from kvmmanager.services.backups.images import BackupImageService
from kvmmanager.services.guest.agents import AgentService
from kvmmanager.services.snapshots import bitmaps, rules
from kvmmanager.services.snapshots import quiesce as qz
from kvmmanager.services.vms.builder import lookup
from kvmmanager.services.vms.service import VmService
from kvmmanager.virt.calls import CallKind, op_name
from kvmmanager.virt.events import Event, EventBus
from kvmmanager.virt.inventory import Inventory
from kvmmanager.virt.registry import HostRegistry
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.metadata import NS_PREFIX, NS_URI, QUIESCE_POLICIES, ManagerMetadata
from kvmmanager.virt.xml.snapshot import DomainSnapshot

log = logging.getLogger(__name__)
T = TypeVar("T")
RUNNING_STATES = (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_PAUSED)


def _snapshot_info(s: libvirt.virDomainSnapshot) -> dict[str, Any]:
    x = DomainSnapshot.from_xml(s.getXMLDesc(0))
    return {
        "name": x.name,
        "description": x.description,
        "parent": x.parent_name,
        "created": x.creation_time,
        "state": x.state,
        "kind": "external" if x.is_external else "internal",
        "memory": x.has_memory,
        "current": bool(s.isCurrent()),
        "disks": {d.name: d.source_file or d.snapshot for d in x.disks if d.snapshot != "no"},
    }


def _tree(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Nested {name, children: [...]} roots, children in creation order."""
    nodes = {i["name"]: {"name": i["name"], "children": []} for i in items}
    roots: list[dict[str, Any]] = []
    for i in sorted(items, key=lambda i: (i["created"] or 0, i["name"])):
        parent = nodes.get(i["parent"] or "")
        (parent["children"] if parent else roots).append(nodes[i["name"]])
    return roots


def _existing(dom: libvirt.virDomain) -> list[DomainSnapshot]:
    return [DomainSnapshot.from_xml(s.getXMLDesc(0)) for s in dom.listAllSnapshots()]


def _lookup_snapshot(dom: libvirt.virDomain, name: str) -> libvirt.virDomainSnapshot:
    try:
        return dom.snapshotLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            raise NotFound(f"vm '{dom.name()}' has no snapshot '{name}'", field="name") from exc
        raise


def _checkpoint_names(dom: libvirt.virDomain) -> tuple[str, ...]:
    try:
        return tuple(c.getName() for c in dom.listAllCheckpoints(0))
    except libvirt.libvirtError:
        return ()  # a driver without checkpoints (the test driver)


def _is_running(dom: libvirt.virDomain) -> bool:
    return dom.state()[0] in RUNNING_STATES


def _metadata(dom: libvirt.virDomain) -> ManagerMetadata:
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG if dom.isPersistent() else 0
    try:
        return ManagerMetadata.from_metadata_api(
            dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS_URI, flags)
        )
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            raise
        return ManagerMetadata()


def _delete(dom: libvirt.virDomain, s: libvirt.virDomainSnapshot, flags: int) -> str:
    """libvirt's delete; answers how the data was merged.

    libvirt 9.0 cannot find the backing chain of a stopped VM's inner external overlay
    ("could not find base disk source in disk source chain", refused before it changes
    anything). Then the VM is started paused (its CPUs never run, so its disks do not
    change), the merge runs as a live block commit, and the VM is powered off again."""
    external = DomainSnapshot.from_xml(s.getXMLDesc(0)).is_external
    if not external:
        s.delete(flags)
        return "internal"
    if dom.isActive():
        s.delete(flags)
        return "block-commit"
    try:
        s.delete(flags)
        return "offline-commit"
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
            raise
    log.info("merging snapshot %s of %s through a paused start", s.getName(), dom.name())
    dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    try:
        dom.snapshotLookupByName(s.getName()).delete(flags)
    finally:
        dom.destroy()
    return "block-commit (paused start)"


class SnapshotService:
    def __init__(
        self,
        bus: EventBus,
        inventory: Inventory,
        registry: HostRegistry,
        agents: AgentService,
        vms: VmService,
        backup_images: BackupImageService,
    ) -> None:
        """`backup_images`: a snapshot delete refuses to drop what a backup chain needs."""
        self._bus = bus
        self._inventory = inventory
        self._registry = registry
        self._agents = agents
        self._vms = vms
        self._backup_images = backup_images

    async def _on(
        self,
        host: str,
        vm: str,
        fn: Callable[[libvirt.virDomain], T],
        kind: CallKind | None = None,
    ) -> T:
        hc = self._registry.get(host)
        return await hc.run(
            lambda: fn(lookup(hc.conn, host, vm)), kind=kind, op=f"{op_name(fn)} '{vm}'", vm=vm
        )

    # ---- reads ------------------------------------------------------------------------

    async def list(self, host: str, vm: str) -> dict[str, Any]:
        def read(dom: libvirt.virDomain) -> dict[str, Any]:
            items = [_snapshot_info(s) for s in dom.listAllSnapshots()]
            items.sort(key=lambda i: (i["created"] or 0, i["name"]))
            current = next((i["name"] for i in items if i["current"]), None)
            return {
                "host": host,
                "vm": dom.name(),
                "uuid": dom.UUIDString(),
                "quiesce_policy": _metadata(dom).agent_quiesce or "auto",
                "current": current,
                "snapshots": items,
                "tree": _tree(items),
            }

        return await self._on(host, vm, read, kind="read")

    async def get(self, host: str, vm: str, name: str) -> dict[str, Any]:
        return await self._on(
            host,
            vm,
            lambda dom: {"host": host, **_snapshot_info(_lookup_snapshot(dom, name))},
            kind="read",
        )

    # ---- create -----------------------------------------------------------------------

    async def create(
        self,
        host: str,
        vm: str,
        name: str | None = None,
        description: str | None = None,
        kind: str | None = None,
        memory: bool | None = None,
        quiesce: str = "auto",
    ) -> dict[str, Any]:
        """Take a snapshot; the result's `consistency` says how consistent it is."""
        name = rules.validate_name(name or time.strftime("snap-%Y%m%d-%H%M%S", time.gmtime()))
        description = rules.validate_description(description)
        if quiesce not in qz.QUIESCE_REQUESTS:
            raise InvalidInput(
                f"quiesce must be one of {', '.join(qz.QUIESCE_REQUESTS)}", field="quiesce"
            )

        def prepare(
            dom: libvirt.virDomain,
        ) -> tuple[rules.SnapshotPlan, str | None, str, tuple[str, ...]]:
            existing = _existing(dom)
            if any(s.name == name for s in existing):
                raise Conflict(f"vm '{dom.name()}' already has a snapshot '{name}'", field="name")
            xml = Domain.from_xml(dom.XMLDesc(0))
            p = rules.plan(xml, _is_running(dom), existing, kind, memory)
            held = () if dom.isActive() else _checkpoint_names(dom)
            return p, _metadata(dom).agent_quiesce, dom.UUIDString(), held

        p, policy, uuid, held = await self._on(host, vm, prepare, kind="read")
        if held:
            # libvirt: "cannot perform block operations while checkpoint exists".
            checkpoints = await self._describe_checkpoints(host, uuid, held)
            raise bitmaps.stopped_snapshot_refusal(vm, checkpoints)
        agent_status, qga_status = self._agent_states(host, uuid)
        c = qz.choose(
            quiesce, policy, p.running and p.disk_only, p.memory, agent_status, qga_status
        )
        flags = p.flags()
        if c.method == "qemu-ga":
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE
        snap_xml = p.to_xml(name, description)

        async def take() -> dict[str, Any]:
            return await self._on(
                host, vm, lambda dom: _snapshot_info(dom.snapshotCreateXML(snap_xml, flags))
            )

        info = await qz.frozen(
            c,
            lambda limit: self._freeze(host, uuid, limit),
            lambda: self._agents.fsfreeze(host, uuid, "thaw"),
            take,
            required=quiesce == "require",
        )
        await self._refresh(host, uuid)
        self._changed(host, uuid, vm, "created", name)
        return {"host": host, "vm": vm, **info, "consistency": c.to_dict()}

    async def _freeze(self, host: str, uuid: str, limit: float) -> Any:
        """Freeze the guest's writable block filesystems through the kvmmanager agent.
        Named explicitly: read-only media (a mounted CD-ROM) cannot be frozen, and an
        agent asked for "everything" fails on them."""
        usage = await self._agents.call(host, uuid, "get_disk_usage")
        mounts = qz.freezable(usage.get("filesystems") or [])
        if not mounts:
            raise GuestError("the guest has no freezable filesystem", field="quiesce")
        params = {"timeout_seconds": limit, "mount_points": mounts}
        return await self._agents.call(host, uuid, "fsfreeze_freeze", params)

    async def _refresh(self, host: str, uuid: str) -> None:
        """Put the VM's state into the inventory now: a snapshot pauses and resumes it,
        a revert may start or stop it, and the next call (an agent call that needs
        'running') must not see the state from before the events arrive."""
        with contextlib.suppress(KvmmError):
            await self._vms.refresh(host, uuid)

    def _changed(self, host: str, uuid: str, vm: str, action: str, snapshot: str) -> None:
        """libvirt sends no event for a snapshot taken, deleted or reverted to (a shut-off
        VM's does not even change state): the manager says so itself, so every open page of
        the VM (its Snapshots tab) and every API event stream sees it without a reload."""
        with contextlib.suppress(NotFound):
            vm = self._inventory.domain(host, uuid).name
        data = {"name": vm, "action": action, "snapshot": snapshot}
        self._bus.publish(Event("domain.snapshot", host=host, subject=uuid, data=data))

    def _agent_states(self, host: str, uuid: str) -> tuple[str, str]:
        try:
            d = self._inventory.domain(host, uuid)
        except NotFound:
            return "absent", "absent"
        return d.agent_status or "absent", d.qga_status or "absent"

    # ---- revert / delete ----------------------------------------------------------------

    async def revert(
        self, host: str, vm: str, name: str, *, start: bool | None = None, force: bool = False
    ) -> dict[str, Any]:
        """Go back to snapshot `name`. `start` True/False forces running/paused-or-off
        afterwards (default: the state the snapshot was taken in)."""

        held = await self._held_checkpoints(host, vm, name)
        if held:
            raise bitmaps.checkpoints_refusal(vm, name, held)

        def fn(dom: libvirt.virDomain) -> dict[str, Any]:
            s = _lookup_snapshot(dom, name)
            rules.check_revert(
                DomainSnapshot.from_xml(s.getXMLDesc(0)), dom.connect().getLibVersion()
            )
            flags = 0
            if start is True:
                flags |= libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING
            elif start is False and _snapshot_info(s)["memory"]:
                flags |= libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED
            if force:
                flags |= libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_FORCE
            try:
                dom.revertToSnapshot(s, flags)
            except libvirt.libvirtError as exc:
                refusal = bitmaps.bitmaps_refusal(vm, name, exc)
                if refusal is None:
                    raise
                raise refusal from exc
            state = dom.state()[0]
            return {
                "host": host,
                "vm": dom.name(),
                "uuid": dom.UUIDString(),
                "snapshot": name,
                "running": state in RUNNING_STATES,
                "paused": state == libvirt.VIR_DOMAIN_PAUSED,
            }

        result = await self._on(host, vm, fn)
        await self._refresh(host, result["uuid"])
        self._changed(host, result["uuid"], result["vm"], "reverted", name)
        return result

    async def _held_checkpoints(
        self, host: str, vm: str, name: str
    ) -> tuple[bitmaps.HeldCheckpoint, ...]:
        """The VM's checkpoints when `name` is an internal snapshot (their bitmaps block
        its revert), each with the backup that made it; () otherwise."""

        def read(dom: libvirt.virDomain) -> tuple[str, tuple[str, ...]]:
            s = _lookup_snapshot(dom, name)
            if DomainSnapshot.from_xml(s.getXMLDesc(0)).is_external:
                return dom.UUIDString(), ()
            return dom.UUIDString(), tuple(c.getName() for c in dom.listAllCheckpoints(0))

        uuid, names = await self._on(host, vm, read, kind="read")
        return await self._describe_checkpoints(host, uuid, names)

    async def _describe_checkpoints(
        self, host: str, uuid: str, names: tuple[str, ...]
    ) -> tuple[bitmaps.HeldCheckpoint, ...]:
        """Checkpoints `names` of VM `uuid`, each with the backup that made it."""
        if not names:
            return ()
        made = {
            b["checkpoint"]: b
            for b in await asyncio.to_thread(self._backup_images.list, host, uuid)
            if b["checkpoint"]
        }
        return tuple(
            bitmaps.HeldCheckpoint(n, made[n]["id"], made[n]["policy"])
            if n in made
            else bitmaps.HeldCheckpoint(n)
            for n in names
        )

    async def delete(
        self, host: str, vm: str, name: str, *, children: bool = False
    ) -> dict[str, Any]:
        """Delete snapshot `name` (and its descendants with `children`). Its data is merged
        into what remains, so the VM's current disk content never changes."""

        def fn(dom: libvirt.virDomain) -> dict[str, Any]:
            s = _lookup_snapshot(dom, name)
            gone = [name]
            if children:
                gone += [
                    c.getName()
                    for c in s.listAllChildren(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_DESCENDANTS)
                ]
            flags = libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN if children else 0
            merged = _delete(dom, s, flags)
            return {
                "host": host,
                "vm": dom.name(),
                "uuid": dom.UUIDString(),
                "deleted": gone,
                "merge": merged,
            }

        result = await self._on(host, vm, fn)
        await self._refresh(host, result["uuid"])
        self._changed(host, result["uuid"], result["vm"], "deleted", name)
        return result

    # ---- policy -----------------------------------------------------------------------

    async def set_quiesce_policy(self, host: str, vm: str, policy: str) -> dict[str, Any]:
        """'never': snapshots of this VM are never quiesced; 'auto': when an agent is there."""
        if policy not in QUIESCE_POLICIES:
            raise InvalidInput(
                f"quiesce policy must be one of {', '.join(QUIESCE_POLICIES)}", field="policy"
            )

        def fn(dom: libvirt.virDomain) -> dict[str, Any]:
            meta = _metadata(dom)
            meta.agent_quiesce = policy
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG if dom.isPersistent() else 0
            if dom.isActive():
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            dom.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                meta.to_metadata_api(),
                NS_PREFIX,
                NS_URI,
                flags,
            )
            return {"host": host, "vm": dom.name(), "quiesce_policy": policy}

        return await self._on(host, vm, fn)
