"""Moving a VM to another host of the manager, through libvirt (peer-to-peer).

`check()` answers, before anything moves, what would make the migration fail and why:
the same host twice, the VM in the wrong state, its name taken on the target, a network
missing or inactive there, a local disk without `copy_storage` or without a pool for it
on the target, a host-passthrough CPU on a different CPU. `start()` runs the migration
as a `vm.migrate` job: progress from libvirt's job statistics, cancel through
`abortJob`, options auto-converge / post-copy / compressed / a bandwidth cap, offline
migration of a stopped VM (its definition only; its disks must be shared or copied
beforehand).

Addresses: in peer-to-peer mode the SOURCE libvirtd opens the target's URI itself, and
QEMU's migration stream (and the NBD server of a disk copy) goes to the address in the
migration URI. Left to itself libvirt takes the target's hostname, which often resolves
to nothing useful; so unless `migrate_uri` says otherwise, the stream goes to the host
name of the target's connection URI (`qemu+tcp://10.0.0.2/system` -> `tcp://10.0.0.2`),
the address the manager already reaches that host on.

A disk counts as shared when its pool on the source is network storage (netfs, rbd,
iscsi, gluster...); a disk in a local pool (dir, logical, fs, disk...) is copied, and a
volume already at the same path on the target is refused rather than overwritten. A
failed or cancelled copy removes the volumes libvirt pre-created on the target.

    report = await manager.migration.check("local", "web1", "node2", copy_storage=True)
    job_id = await manager.migration.start("local", "web1", "node2", copy_storage=True)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import libvirt
from lxml import etree

from kvmmanager.core.errors import (
    Cancelled,
    Conflict,
    InvalidInput,
    KvmmError,
    NotFound,
    Unsupported,
)
from kvmmanager.services.jobs.service import JobService
from kvmmanager.services.vms.builder import lookup
from kvmmanager.services.vms.service import VmService
from kvmmanager.virt.errors import libvirt_message
from kvmmanager.virt.inventory import Inventory
from kvmmanager.virt.registry import HostRegistry
from kvmmanager.virt.xml.capabilities import Capabilities
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.pool import Pool

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
RUNNING = (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_PAUSED)
# Pools whose volumes every host of a cluster sees at the same path.
SHARED_POOL_TYPES = frozenset(
    {"netfs", "rbd", "gluster", "iscsi", "iscsi-direct", "sheepdog", "vstorage"}
)
MAX_BANDWIDTH_MIB = 1_000_000


def default_migrate_uri(target_uri: str) -> str | None:
    """`tcp://<host>` of the target's connection URI, or None for a local URI."""
    host = urlsplit(target_uri).hostname
    if not host:
        return None
    return f"tcp://[{host}]" if ":" in host else f"tcp://{host}"


def _check_migrate_uri(uri: str) -> None:
    parts = urlsplit(uri)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme != "tcp"
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or port == -1
        or parts.username
    ):
        raise InvalidInput(
            f"migrate_uri '{uri}' must look like tcp://HOST or tcp://HOST:PORT",
            field="migrate_uri",
        )


@dataclass
class MigrationOptions:
    live: bool = True
    copy_storage: bool = False
    auto_converge: bool = False
    post_copy: bool = False
    compressed: bool = False
    bandwidth_mib: int | None = None
    migrate_uri: str | None = None

    def __post_init__(self) -> None:
        if self.bandwidth_mib is not None and not 1 <= self.bandwidth_mib <= MAX_BANDWIDTH_MIB:
            raise InvalidInput(
                f"bandwidth_mib must be between 1 and {MAX_BANDWIDTH_MIB} (MiB/s)",
                field="bandwidth_mib",
            )
        if self.migrate_uri is not None:
            _check_migrate_uri(self.migrate_uri)

    def params(self, target_uri: str) -> dict[str, Any]:
        """virDomainMigrateToURI3's typed parameters (none for an offline move)."""
        if not self.live:
            return {}
        out: dict[str, Any] = {}
        uri = self.migrate_uri or default_migrate_uri(target_uri)
        if uri:
            out[libvirt.VIR_MIGRATE_PARAM_URI] = uri
        if self.bandwidth_mib:
            out[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = self.bandwidth_mib
        return out

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


def _has_volume(conn: libvirt.virConnect, path: str) -> bool:
    try:
        conn.storageVolLookupByPath(path)
        return True
    except libvirt.libvirtError:
        return False


def _is_shared(source: libvirt.virConnect, target: libvirt.virConnect, path: str) -> bool:
    """Both hosts see the same volume (network storage such as NFS or Ceph).

    Decided by the type of the source's pool: a local pool's path existing on the target
    is another disk that merely has the same name, and must not be taken for this one.
    A disk outside any pool falls back to "the target has a volume at that path"."""
    try:
        pool = source.storageVolLookupByPath(path).storagePoolLookupByVolume()
        pool_type = Pool.from_xml(pool.XMLDesc(0)).type
    except libvirt.libvirtError:
        return _has_volume(target, path)
    return pool_type in SHARED_POOL_TYPES


def _check_target_can_run(dst: libvirt.virConnect, dom: libvirt.virDomain, target: str) -> None:
    """The target offers the VM's architecture and domain type, and (for a running VM) its
    CPU as libvirt expanded it (libvirt's compareHypervisorCPU): else the reason, before
    libvirt fails half way."""
    live = Domain.from_xml(dom.XMLDesc(0))
    arch, dom_type = live.os.arch, live.type
    caps = Capabilities.from_xml(dst.getCapabilities())
    if arch and arch not in caps.arches():
        raise Unsupported(f"host '{target}' cannot run {arch} guests", field="target")
    if arch and dom_type and dom_type not in caps.domain_types(arch):
        raise Unsupported(
            f"host '{target}' offers no '{dom_type}' domains for {arch} guests", field="target"
        )
    cpu = etree.fromstring(dom.XMLDesc(0).encode()).find("cpu")
    if not dom.isActive() or cpu is None:
        return
    try:
        verdict = dst.compareHypervisorCPU(
            None, arch, live.os.machine, dom_type, etree.tostring(cpu, encoding="unicode"), 0
        )
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (
            libvirt.VIR_ERR_NO_SUPPORT,
            libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
        ):
            return  # a driver that cannot compare: libvirt's own check at migration remains
        raise Unsupported(
            f"host '{target}' cannot run the CPU of vm '{dom.name()}': {libvirt_message(exc)}",
            field="target",
        ) from exc
    if verdict == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
        raise Unsupported(
            f"host '{target}' cannot run the CPU of vm '{dom.name()}' (libvirt's CPU comparison "
            "says incompatible)",
            field="target",
        )


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
    src_type, dst_type = src.getType(), dst.getType()
    if src_type != dst_type:
        raise Unsupported(
            f"host '{target}' runs {dst_type} and '{host}' runs {src_type}: a VM migrates "
            "only between hosts of the same hypervisor",
            field="target",
        )
    dom = lookup(src, host, vm)
    _check_target_can_run(dst, dom, target)
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
        if _is_shared(src, dst, path):
            continue
        local.append(path)
        if not opts.copy_storage:
            raise Conflict(
                f"disk {d.target_dev} ({path}) is local to '{host}': ask for copy_storage",
                field="copy_storage",
            )
        if _has_volume(dst, path):
            raise Conflict(
                f"host '{target}' already has a volume at {path}: copying disk "
                f"{d.target_dev} would overwrite it",
                field="target",
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


def _progress_message(stats: dict[str, Any]) -> str:
    """Which phase the figures are about: a disk copy runs before the memory pass and
    libvirt reports its bytes in the same data_* fields."""
    if stats.get("memory_total"):
        return "migrating memory"
    if stats.get("disk_total"):
        return "copying disks"
    return "migrating"


def _completed_stats(dst: libvirt.virConnect, uuid: str) -> dict[str, Any]:
    """What the target measured for the incoming migration (best effort)."""
    try:
        stats = dst.lookupByUUIDString(uuid).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError:
        return {}
    keys = ("time_elapsed", "downtime", "data_total", "memory_iteration", "disk_total")
    return {k: stats[k] for k in keys if k in stats}


def _drop_copied_volumes(dst: libvirt.virConnect, uuid: str, paths: list[str]) -> list[str]:
    """After a failed or cancelled copy: delete the volumes libvirt pre-created on the
    target (pre-flight refused any that existed before), unless the VM did arrive."""
    with contextlib.suppress(libvirt.libvirtError):
        dst.lookupByUUIDString(uuid)
        return []
    removed = []
    dirs = {os.path.dirname(p) for p in paths}
    for pool in dst.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        with contextlib.suppress(libvirt.libvirtError):
            if os.path.normpath(Pool.from_xml(pool.XMLDesc(0)).target_path or "") in dirs:
                pool.refresh(0)
    for path in paths:
        try:
            dst.storageVolLookupByPath(path).delete(0)
            removed.append(path)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                log.warning("migration cleanup: cannot delete %s on the target: %s", path, exc)
    return removed


def _explain(exc: KvmmError, opts: MigrationOptions) -> KvmmError:
    """Say which option QEMU refused, when the reason is known."""
    if opts.post_copy and "Postcopy is not supported" in exc.message:
        return Unsupported(
            "post-copy is not available between these hosts: QEMU says "
            f"'{exc.message}' (it needs userfaultfd, e.g. vm.unprivileged_userfaultfd=1 "
            "on the target); migrate without post_copy",
            field="post_copy",
        )
    return exc


class MigrationService:
    def __init__(
        self, registry: HostRegistry, inventory: Inventory, jobs: JobService, vms: VmService
    ) -> None:
        self._registry = registry
        self._inventory = inventory
        self._jobs = jobs
        self._vms = vms

    async def check(self, host: str, vm: str, target: str, **options: Any) -> dict[str, Any]:
        opts = MigrationOptions(**options)
        src_hc = self._registry.get(host)
        dst_hc = self._registry.get(target)
        if dst_hc.status == "connecting":
            await dst_hc.wait_connected(5)  # a host just added: give it its first open
        # Not responding, reconnecting, failed: refused at once, naming the target (a
        # wait would only delay the same answer).
        dst_hc.refuse_unless_connected("migration check")
        # Runs on the source's worker; the target's reads are short lookups.
        return await src_hc.run(
            lambda: preflight(src_hc.conn, dst_hc.conn, host, vm, target, opts),
            kind="read",
            op="migration check",
        )

    async def start(
        self, host: str, vm: str, target: str, *, user: Any = None, **options: Any
    ) -> str:
        plan = await self.check(host, vm, target, **options)
        opts = MigrationOptions(**options)
        src_hc, dst_hc = self._registry.get(host), self._registry.get(target)
        uri = dst_hc.uri
        flags, params = plan["flags"], opts.params(uri)
        uuid = plan["uuid"]
        copied: list[str] = plan["copy_disks"] if opts.live else []

        def stats() -> dict[str, Any]:
            return src_hc.conn.lookupByUUIDString(uuid).jobStats(0)

        async def job(progress: Any) -> dict[str, Any]:
            def migrate() -> None:
                dom = src_hc.conn.lookupByUUIDString(uuid)
                dom.migrateToURI3(uri, params, flags)

            # The migration itself is the one unbounded call of this job; the polls and
            # the clean-up around it have deadlines, so a frozen host cannot hang them.
            task = asyncio.ensure_future(src_hc.run(migrate, kind="job", op="migrate"))
            post_copy_started = False
            try:
                while not task.done():
                    await asyncio.wait({task}, timeout=POLL_SECONDS)
                    if task.done():
                        break
                    if progress.cancelled():
                        with contextlib.suppress(KvmmError):  # it may have just ended
                            await src_hc.run(
                                lambda: src_hc.conn.lookupByUUIDString(uuid).abortJob(),
                                kind="lifecycle",
                                op="abort the migration",
                            )
                        try:
                            await task
                        except KvmmError:
                            raise Cancelled("migration cancelled") from None
                        break  # finished before the abort landed: it did migrate
                    try:
                        s = await src_hc.run(stats, kind="read", op="migration progress")
                    except KvmmError:
                        continue  # between phases, or already gone from the source
                    if (
                        opts.post_copy
                        and not post_copy_started
                        and int(s.get("memory_iteration") or 0) >= 2
                    ):
                        # Like virsh --postcopy-after-precopy: one full pre-copy pass,
                        # then the target pulls the pages still dirty.
                        with contextlib.suppress(KvmmError):
                            await src_hc.run(
                                lambda: src_hc.conn.lookupByUUIDString(uuid).migrateStartPostCopy(),
                                kind="lifecycle",
                                op="switch to post-copy",
                            )
                            post_copy_started = True
                    total = int(s.get("data_total") or 0)
                    with contextlib.suppress(Cancelled):  # handled on the next turn
                        progress(
                            int(s.get("data_processed") or 0), total or None, _progress_message(s)
                        )
                try:
                    task.result()
                except KvmmError as exc:
                    raise _explain(exc, opts) from exc
            except BaseException:
                if not task.done():
                    await asyncio.shield(asyncio.wait({task}))
                if copied:
                    try:
                        removed = await dst_hc.run(
                            lambda: _drop_copied_volumes(dst_hc.conn, uuid, copied),
                            kind="lifecycle",
                            op="remove the copied volumes",
                        )
                    except KvmmError as exc:  # the migration's own error matters more
                        log.warning("migration cleanup on %s failed: %s", target, exc)
                    else:
                        if removed:
                            log.info("migration failed: removed %s on %s", removed, target)
                raise
            await self._vms.refresh(target, uuid)
            await self._forget_on_source(host, uuid)
            measured = await dst_hc.run(
                lambda: _completed_stats(dst_hc.conn, uuid), kind="read", op="migration stats"
            )
            result = {k: v for k, v in plan.items() if k != "flags"}
            return {
                **result,
                "done": True,
                "migrate_uri": params.get(libvirt.VIR_MIGRATE_PARAM_URI),
                "post_copy_started": post_copy_started,
                "stats": measured,
            }

        return self._jobs.start("vm.migrate", f"{host}/{vm}", job, user, host=host)

    async def _forget_on_source(self, host: str, uuid: str) -> None:
        """Libvirt sends no "undefined" event when an offline migration removes the
        source's definition: re-read the VM there, and drop it once libvirt says so."""
        try:
            await self._vms.refresh(host, uuid)
        except NotFound:
            self._inventory.remove_domain(host, uuid)
