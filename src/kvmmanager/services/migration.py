"""Moving a VM to another host of the manager, through libvirt (peer-to-peer).

`check()` answers, before anything moves, what would make the migration fail and why:
the same host twice, the VM in the wrong state, its name taken on the target, a network
missing or inactive there, a local disk without `copy_storage` or without a pool for it
on the target, a host-passthrough CPU on a different CPU. `start()` runs the migration
as a `vm.migrate` job: progress from libvirt's job statistics, cancel through
`abortJob`, options auto-converge / post-copy / compressed, offline migration of a
stopped VM (its definition only; its disks must be shared or copied beforehand).

    report = await manager.migration.check("local", "web1", "node2", copy_storage=True)
    job_id = await manager.migration.start("local", "web1", "node2", copy_storage=True)
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import libvirt

from kvmmanager.core.errors import Cancelled, Conflict, InvalidInput, Unsupported
from kvmmanager.services.vm_builder import lookup
from kvmmanager.virt.xml.capabilities import Capabilities
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.pool import Pool

if TYPE_CHECKING:
    from kvmmanager.services.manager import Manager

POLL_SECONDS = 1.0
RUNNING = (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_PAUSED)


@dataclass
class MigrationOptions:
    live: bool = True
    copy_storage: bool = False
    auto_converge: bool = False
    post_copy: bool = False
    compressed: bool = False

    def flags(self) -> int:
        f = (
            libvirt.VIR_MIGRATE_PEER2PEER
            | libvirt.VIR_MIGRATE_PERSIST_DEST
            | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        )
        if not self.live:
            return f | libvirt.VIR_MIGRATE_OFFLINE
        f |= libvirt.VIR_MIGRATE_LIVE
        if self.copy_storage:
            f |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
        if self.auto_converge:
            f |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        if self.post_copy:
            f |= libvirt.VIR_MIGRATE_POSTCOPY
        if self.compressed:
            f |= libvirt.VIR_MIGRATE_COMPRESSED
        return f


def _host_uuid(conn: libvirt.virConnect) -> str | None:
    return Capabilities.from_xml(conn.getCapabilities()).host_uuid


def _pool_dirs(conn: libvirt.virConnect) -> set[str]:
    out = set()
    for p in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        path = Pool.from_xml(p.XMLDesc(0)).target_path
        if path:
            out.add(os.path.normpath(path))
    return out


def _is_shared(target: libvirt.virConnect, path: str) -> bool:
    """The target sees the same volume (shared storage such as NFS)."""
    try:
        target.storageVolLookupByPath(path)
        return True
    except libvirt.libvirtError:
        return False


def preflight(
    src: libvirt.virConnect,
    dst: libvirt.virConnect,
    host: str,
    vm: str,
    target: str,
    opts: MigrationOptions,
) -> dict[str, Any]:
    """Raise the first reason the migration cannot work; otherwise what it will do."""
    if src.getURI() == dst.getURI() or (
        _host_uuid(src) is not None and _host_uuid(src) == _host_uuid(dst)
    ):
        raise InvalidInput(
            f"host '{target}' is the same machine as '{host}': nothing to migrate to",
            field="target",
        )
    dom = lookup(src, host, vm)
    running = dom.state()[0] in RUNNING
    if opts.live and not running:
        raise Conflict(
            f"vm '{dom.name()}' is not running: use live=false for an offline migration",
            field="live",
        )
    if not opts.live and running:
        raise Conflict(f"vm '{dom.name()}' is running: migrate it live", field="live")
    if not opts.live and not dom.isPersistent():
        raise Conflict(f"vm '{dom.name()}' is transient: nothing to migrate offline", field="vm")
    if opts.post_copy and opts.copy_storage:
        raise Unsupported("post-copy cannot be combined with copy_storage", field="post_copy")
    for probe in (dst.lookupByName, dst.lookupByUUIDString):
        try:
            probe(dom.name() if probe == dst.lookupByName else dom.UUIDString())
            raise Conflict(f"host '{target}' already has a vm '{dom.name()}'", field="target")
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
    xml = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    for nic in xml.devices.interfaces:
        if nic.source_network:
            try:
                net = dst.networkLookupByName(nic.source_network)
            except libvirt.libvirtError as exc:
                raise Conflict(
                    f"network '{nic.source_network}' does not exist on host '{target}'",
                    field="target",
                ) from exc
            if not net.isActive():
                raise Conflict(
                    f"network '{nic.source_network}' is not active on host '{target}'",
                    field="target",
                )
    local: list[str] = []
    dirs = _pool_dirs(dst)
    for d in xml.devices.disks:
        path = d.source_path
        if not path or d.readonly or d.device not in (None, "disk", "lun"):
            continue
        if _is_shared(dst, path):
            continue
        local.append(path)
        if not opts.copy_storage:
            raise Conflict(
                f"disk {d.target_dev} ({path}) is local to '{host}': ask for copy_storage",
                field="copy_storage",
            )
        if opts.live and os.path.dirname(os.path.normpath(path)) not in dirs:
            raise Conflict(
                f"host '{target}' has no active pool for {os.path.dirname(path)} to receive "
                f"disk {d.target_dev}",
                field="target",
            )
    if not opts.live and local:
        raise Unsupported(
            "an offline migration moves the definition only: the disks must be shared "
            "storage (or copied first)",
            field="live",
        )
    if xml.cpu_mode == "host-passthrough" and opts.live:
        a = Capabilities.from_xml(src.getCapabilities())
        b = Capabilities.from_xml(dst.getCapabilities())
        if a.host_cpu_model != b.host_cpu_model:
            raise Conflict(
                "the vm uses host-passthrough and the hosts' CPU models differ",
                field="target",
            )
    return {
        "vm": dom.name(),
        "uuid": dom.UUIDString(),
        "from": host,
        "to": target,
        "live": opts.live,
        "copy_disks": local,
        "flags": opts.flags(),
    }


class MigrationService:
    def __init__(self, manager: Manager) -> None:
        self.m = manager

    async def check(self, host: str, vm: str, target: str, **options: Any) -> dict[str, Any]:
        opts = MigrationOptions(**options)
        src_hc = self.m.registry.get(host)
        dst_hc = self.m.registry.get(target)
        if dst_hc.status != "connected":
            await dst_hc.wait_connected(5)  # HostUnavailable naming the target otherwise
        # Runs on the source's worker; the target's reads are short lookups.
        return await src_hc.run(lambda: preflight(src_hc.conn, dst_hc.conn, host, vm, target, opts))

    async def start(
        self, host: str, vm: str, target: str, *, user: Any = None, **options: Any
    ) -> str:
        plan = await self.check(host, vm, target, **options)
        src_hc, dst_hc = self.m.registry.get(host), self.m.registry.get(target)
        uri = dst_hc.uri
        flags = plan["flags"]
        uuid = plan["uuid"]

        async def job(progress: Any) -> dict[str, Any]:
            def migrate() -> None:
                dom = src_hc.conn.lookupByUUIDString(uuid)
                dom.migrateToURI3(uri, {}, flags)

            task = asyncio.ensure_future(src_hc.run(migrate))
            try:
                while not task.done():
                    await asyncio.wait({task}, timeout=POLL_SECONDS)
                    if task.done():
                        break
                    if progress.cancelled():
                        await src_hc.run(lambda: src_hc.conn.lookupByUUIDString(uuid).abortJob())
                        raise Cancelled("migration cancelled")
                    stats = await src_hc.run(
                        lambda: src_hc.conn.lookupByUUIDString(uuid).jobStats(0)
                    )
                    total = int(stats.get("data_total") or 0)
                    progress(int(stats.get("data_processed") or 0), total or None, "migrating")
                task.result()
            except BaseException:
                if not task.done():
                    await asyncio.shield(asyncio.wait({task}))
                raise
            await self.m.vms.refresh(target, uuid)
            return {**{k: v for k, v in plan.items() if k != "flags"}, "done": True}

        return self.m.jobs.start("vm.migrate", f"{host}/{vm}", job, user, host=host)
