"""Storage pools and volumes of a host, through libvirt only.

Pools: define (dir, logical, netfs) / build / start / stop / autostart / refresh / delete.
Volumes: list / get / create (qcow2 or raw, optional backing volume) / delete / resize /
clone (a job) / upload and download as libvirt streams (see `transfer`).

A volume a VM uses is never deleted from under it: the inventory's disk sources say who
uses what, and `volume_path_in_use_by` lets the VM service ask the same question.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound
from kvmmanager.services.storage import clone as storage_clone
from kvmmanager.services.storage import transfer
from kvmmanager.services.storage.calls import JobStarter, VolumeOwners
from kvmmanager.services.storage.specs import (
    PoolSpec,
    VolumeSpec,
    check_size,
    validate_pool_spec,
    validate_volume_spec,
)
from kvmmanager.services.storage.xml import (
    POOL_ACTIONS,
    PoolDetails,
    VolumeDetails,
    active_pool,
    build_flags,
    build_pool_xml,
    build_volume_xml,
    host_refusal,
    lookup_pool,
    lookup_volume,
    pool_details,
    pool_model,
    volume_details,
    volume_exists,
)
from kvmmanager.virt import readers
from kvmmanager.virt.calls import CallKind, op_name
from kvmmanager.virt.connection import HostConnection
from kvmmanager.virt.inventory import Inventory, PoolInfo
from kvmmanager.virt.registry import HostRegistry

T = TypeVar("T")

_RUNNING_VM_STATES = frozenset({"running", "paused", "blocked", "pmsuspended", "crashed"})
# How often a clone job reads the new volume's allocation to report progress.
CLONE_POLL_SECONDS = 0.5


class StorageService:
    def __init__(
        self,
        inventory: Inventory,
        registry: HostRegistry,
        ownership: VolumeOwners,
        jobs: JobStarter,
    ) -> None:
        self.inventory = inventory
        self.registry = registry
        self.ownership = ownership
        self.jobs = jobs

    # -- plumbing ------------------------------------------------------------------------

    def _host(self, host: str) -> HostConnection:
        return self.registry.get(host)

    async def _call(
        self, host: str, fn: Callable[..., T], *args: Any, kind: CallKind | None = None
    ) -> T:
        """Run `fn(conn, *args)` on the host's worker threads (within `kind`'s deadline)."""
        h = self._host(host)
        return await h.run(lambda: fn(h.conn, *args), kind=kind, op=op_name(fn))

    async def sync_pool(self, host: str, name: str) -> None:
        """Re-read one pool into the inventory. libvirt sends no event for autostart
        changes or for volumes changing a pool's allocation; pool lifecycle events still
        arrive and re-read it too, which is harmless."""
        h = self._host(host)

        def op() -> PoolInfo | None:
            try:
                return readers.read_pool(host, h.conn.storagePoolLookupByName(name))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                    return None
                raise

        info = await h.run(op, kind="read", op=f"re-read pool '{name}'")
        if info is not None:
            self.inventory.put_pool(info)

    # -- who uses what -------------------------------------------------------------------

    def volume_path_in_use_by(
        self,
        host: str,
        path: str,
        *,
        pool: str | None = None,
        volume: str | None = None,
        running_only: bool = False,
        exclude: str | None = None,
    ) -> list[str]:
        """Names of the VMs on `host` (from the inventory) with a disk on `path` (or on the
        pool/volume pair, for `<disk type='volume'>`). `exclude` skips one VM (by name or
        uuid), e.g. the VM being deleted."""
        users = []
        for dom in self.inventory.domains(host):
            if exclude is not None and exclude in (dom.name, dom.uuid):
                continue
            if running_only and dom.state not in _RUNNING_VM_STATES:
                continue
            for disk in dom.disks:
                if (disk.source and disk.source == path) or (
                    volume is not None and disk.pool == pool and disk.volume == volume
                ):
                    users.append(dom.name)
                    break
        return sorted(users)

    def running_pool_users(self, host: str, pool: PoolDetails) -> list[str]:
        """Running VMs with a disk in `pool` (by pool name or under its directory): the
        ones a stop would cut off from their disks (named in the web UI's confirm)."""
        return self._pool_in_use(host, pool.name, pool.target, set(), running_only=True)

    def _pool_in_use(
        self,
        host: str,
        pool: str,
        prefix: str | None,
        paths: set[str],
        running_only: bool = False,
    ) -> list[str]:
        """VMs with a disk in `pool` (by name), on any of `paths`, or under `prefix`."""
        users = set()
        for dom in self.inventory.domains(host):
            if running_only and dom.state not in _RUNNING_VM_STATES:
                continue
            for disk in dom.disks:
                src = disk.source or ""
                if (
                    disk.pool == pool
                    or src in paths
                    or (prefix and src.startswith(prefix.rstrip("/") + "/"))
                ):
                    users.add(dom.name)
        return sorted(users)

    # -- pools ---------------------------------------------------------------------------

    async def list_pools(self, host: str) -> list[PoolDetails]:
        def op(conn: libvirt.virConnect) -> list[PoolDetails]:
            out = []
            for pool in conn.listAllStoragePools(0):
                try:
                    out.append(pool_details(pool))
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                        raise
            return sorted(out, key=lambda p: p.name)

        return await self._call(host, op, kind="read")

    async def get_pool(self, host: str, name: str) -> PoolDetails:
        return await self._call(
            host, lambda conn: pool_details(lookup_pool(conn, name)), kind="read"
        )

    async def define_pool(self, host: str, spec: PoolSpec) -> PoolDetails:
        """Define, then build/autostart/start as the spec says. If a step fails the pool is
        undefined again, so the caller can fix the spec and retry."""
        spec = validate_pool_spec(spec)
        xml = build_pool_xml(spec)

        def op(conn: libvirt.virConnect) -> PoolDetails:
            try:
                conn.storagePoolLookupByName(spec.name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                    raise
            else:
                raise Conflict(f"pool '{spec.name}' already exists", field="name")
            refusal_field = "source_devices" if spec.type == "logical" else "target"
            with host_refusal(conn, refusal_field):
                pool = conn.storagePoolDefineXML(xml, 0)
            try:
                with host_refusal(conn, refusal_field):
                    if spec.build and (spec.type != "logical" or spec.source_devices):
                        pool.build(build_flags(spec.type))
                    if spec.autostart:
                        pool.setAutostart(1)
                    if spec.start:
                        pool.create(0)
            except BaseException:
                # Best effort: the error that stopped the define is the one to report.
                with contextlib.suppress(libvirt.libvirtError):
                    if pool.isActive():
                        pool.destroy()
                    pool.undefine()
                raise
            return pool_details(pool)

        details = await self._call(host, op, kind="lifecycle")
        await self.sync_pool(host, spec.name)
        return details

    async def pool_action(self, host: str, name: str, action: str) -> PoolDetails:
        """start | stop | build | refresh | autostart | noautostart."""
        fn = POOL_ACTIONS.get(action)
        if fn is None:
            raise InvalidInput(f"action must be one of {', '.join(POOL_ACTIONS)}", field="action")

        def op(conn: libvirt.virConnect) -> PoolDetails:
            pool = lookup_pool(conn, name)
            fn(pool)
            return pool_details(pool)

        # Lifecycle even inside a job (an ISO deploy refreshes its pool): a refresh of a
        # pool on a hung NFS mount must fail the job at the deadline, not hang it.
        details = await self._call(host, op, kind="lifecycle")
        await self.sync_pool(host, name)
        return details

    async def delete_pool(
        self, host: str, name: str, *, delete_volumes: bool = False, force: bool = False
    ) -> None:
        """Stop and undefine the pool. `delete_volumes` also deletes every volume and the
        pool's storage (the directory, the volume group). A pool holding a volume a VM
        uses is refused unless `force`."""

        def inspect_pool(conn: libvirt.virConnect) -> tuple[str | None, set[str]]:
            pool = lookup_pool(conn, name)
            target = pool_model(pool).target_path
            paths = {v.path() for v in pool.listAllVolumes(0)} if pool.isActive() else set()
            return target, paths

        target, paths = await self._call(host, inspect_pool, kind="read")
        users = self._pool_in_use(host, name, target, paths)
        if users and not force:
            raise Conflict(
                f"pool '{name}' holds volumes used by VM(s): {', '.join(users)}",
                field="pool",
                details={"vms": users},
            )

        def op(conn: libvirt.virConnect) -> None:
            pool = lookup_pool(conn, name)
            # Asked first: a transient pool no longer exists once destroyed, so its
            # storage itself (directory, VG) cannot be deleted through libvirt afterwards.
            persistent = pool.isPersistent()
            if delete_volumes:
                if not pool.isActive():
                    with host_refusal(conn, "pool"):
                        pool.create(0)
                for vol in pool.listAllVolumes(0):
                    vol.delete(0)
            if pool.isActive():
                pool.destroy()
            if persistent:
                if delete_volumes:
                    with host_refusal(conn, "pool"):
                        pool.delete(libvirt.VIR_STORAGE_POOL_DELETE_NORMAL)
                pool.undefine()

        await self._call(host, op)

    # -- volumes -------------------------------------------------------------------------

    def _with_users(self, host: str, details: VolumeDetails) -> VolumeDetails:
        details.used_by = self.volume_path_in_use_by(
            host, details.path, pool=details.pool, volume=details.name
        )
        return details

    async def list_volumes(self, host: str, pool: str) -> list[VolumeDetails]:
        def op(conn: libvirt.virConnect) -> list[VolumeDetails]:
            p = active_pool(conn, pool)
            out = []
            for vol in p.listAllVolumes(0):
                try:
                    out.append(volume_details(pool, vol))
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                        raise
            return sorted(out, key=lambda v: v.name)

        return [self._with_users(host, v) for v in await self._call(host, op, kind="read")]

    async def get_volume(self, host: str, pool: str, name: str) -> VolumeDetails:
        def op(conn: libvirt.virConnect) -> VolumeDetails:
            return volume_details(pool, lookup_volume(active_pool(conn, pool), name))

        return self._with_users(host, await self._call(host, op, kind="read"))

    async def create_volume(self, host: str, pool: str, spec: VolumeSpec) -> VolumeDetails:
        spec, capacity = validate_volume_spec(spec)

        def op(conn: libvirt.virConnect) -> VolumeDetails:
            p = active_pool(conn, pool)
            if volume_exists(p, spec.name):
                raise Conflict(
                    f"volume '{spec.name}' already exists in pool '{pool}'", field="name"
                )
            backing = None
            size = capacity
            if spec.backing is not None:
                bpool = (
                    p if spec.backing.pool in (None, pool) else active_pool(conn, spec.backing.pool)
                )
                try:
                    bvol = lookup_volume(bpool, spec.backing.volume)
                except NotFound as exc:
                    raise InvalidInput(exc.message, field="backing.volume") from exc
                bdetails = volume_details(bpool.name(), bvol)
                backing = (bdetails.path, bdetails.format or "raw")
                if size is None:
                    size = bdetails.capacity
                elif size < bdetails.capacity:
                    raise InvalidInput(
                        "capacity must not be smaller than the backing volume's "
                        f"{bdetails.capacity} bytes",
                        field="capacity",
                    )
            assert size is not None
            xml = build_volume_xml(
                spec.name, size, spec.format, backing=backing, preallocate=spec.preallocate
            )
            flags = 0
            if spec.preallocate and spec.format == "qcow2":
                flags |= libvirt.VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA
            return volume_details(pool, p.createXML(xml, flags))

        details = await self._call(host, op)
        await self.sync_pool(host, pool)
        return self._with_users(host, details)

    async def delete_volume(self, host: str, pool: str, name: str) -> None:
        details = await self.get_volume(host, pool, name)
        if details.used_by:
            raise Conflict(
                f"volume '{name}' is used by VM(s): {', '.join(details.used_by)}",
                field="volume",
                details={"vms": details.used_by},
            )

        def op(conn: libvirt.virConnect) -> None:
            lookup_volume(active_pool(conn, pool), name).delete(0)

        # Lifecycle even inside a job (an ISO deploy's old versions): deleting a volume
        # is short, and a frozen host must fail the job, not hang it.
        await self._call(host, op, kind="lifecycle")
        # A later volume of this name is not the deleted one's owner's.
        self.ownership.forget_volume(host, pool, name)
        await self.sync_pool(host, pool)

    async def resize_volume(
        self, host: str, pool: str, name: str, capacity: int | str, *, shrink: bool = False
    ) -> VolumeDetails:
        """Set the volume's capacity. Shrinking loses data and must be asked for; a volume
        a running VM uses is resized through the VM (block resize), not here."""
        size = check_size(capacity, "capacity")
        details = await self.get_volume(host, pool, name)
        running = self.volume_path_in_use_by(
            host, details.path, pool=pool, volume=name, running_only=True
        )
        if running:
            raise Conflict(
                f"volume '{name}' is in use by running VM(s) {', '.join(running)}: "
                "resize the VM's disk instead",
                field="volume",
            )
        if size < details.capacity and not shrink:
            raise InvalidInput(
                f"capacity {size} is smaller than the current {details.capacity} bytes; "
                "shrinking loses data and needs shrink=true",
                field="capacity",
            )
        if size == details.capacity:
            return details

        def op(conn: libvirt.virConnect) -> VolumeDetails:
            vol = lookup_volume(active_pool(conn, pool), name)
            vol.resize(
                size, libvirt.VIR_STORAGE_VOL_RESIZE_SHRINK if size < details.capacity else 0
            )
            return volume_details(pool, vol)

        details = await self._call(host, op)
        await self.sync_pool(host, pool)
        return self._with_users(host, details)

    async def clone_volume(
        self,
        host: str,
        pool: str,
        name: str,
        new_name: str,
        *,
        target_pool: str | None = None,
        format: str | None = None,
        user: Any = None,
    ) -> str:
        """Copy a volume as a job (kind `volume.clone`); returns the job id. See
        `storage_clone.start_clone`."""
        return await storage_clone.start_clone(
            self, host, pool, name, new_name, target_pool=target_pool, format=format, user=user
        )

    # -- streams (see `transfer`) --------------------------------------------------------

    async def check_upload(
        self, host: str, pool: str, name: str, *, size: int, create: bool, format: str
    ) -> None:
        """Raise now what an upload with these arguments would fail with."""
        await transfer.check_upload(self, host, pool, name, size=size, create=create, format=format)

    async def upload_volume(
        self,
        host: str,
        pool: str,
        name: str,
        source: transfer.UploadSource,
        *,
        size: int | None = None,
        create: bool = False,
        format: str = "raw",
        progress: transfer.ProgressFn | None = None,
        cancelled: transfer.CancelledFn | None = None,
    ) -> VolumeDetails:
        """Stream a local file or an iterator of chunks into a volume through libvirt;
        see `transfer.upload_volume`."""
        return await transfer.upload_volume(
            self,
            host,
            pool,
            name,
            source,
            size=size,
            create=create,
            format=format,
            progress=progress,
            cancelled=cancelled,
        )

    async def open_download(
        self, host: str, pool: str, name: str
    ) -> tuple[VolumeDetails, transfer.Download]:
        """Open a download stream of a volume's bytes; the caller consumes `chunks()`."""
        return await transfer.open_volume_download(self, host, pool, name)
