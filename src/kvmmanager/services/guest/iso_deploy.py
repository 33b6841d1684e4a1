"""Deploy the agent ISO into a host's storage pool through libvirt, and report its state.

No file is ever copied by hand: the volume is created through libvirt and filled through
a libvirt upload stream (`services.transfer`), which libvirtd writes with its own rights,
locally or on a `qemu+ssh://` host alike.

Naming: one volume per agent version, `kvmmanager-guest-agent-<version>.iso`. A VM's
CD-ROM points at a versioned volume, so deploying a newer version never changes the
bytes under a VM: the new version gets its own volume, and older ones are deleted only
when no VM definition refers to them any more (the next deploy retries). The content is
checked by sha256 (read back through a libvirt download stream, the ISO is small), so a
volume left half-written by a killed process, or rebuilt with the same version, is
replaced: that one is deleted and re-created, which leaves a running VM reading its
already open file untouched.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from kvmmanager.core.config import Settings
from kvmmanager.core.errors import HostUnavailable, NotFound, Unsupported
from kvmmanager.iso import agent_version
from kvmmanager.iso.locator import IsoLocation, locate_iso, require_iso
from kvmmanager.iso.volume_names import volume_name, volume_version
from kvmmanager.services.guest.deployed import DeployResult
from kvmmanager.services.guest.install import AgentInstallService, InstallResult
from kvmmanager.services.jobs.service import JobProgress
from kvmmanager.services.storage import transfer
from kvmmanager.services.storage.calls import JobStarter
from kvmmanager.services.storage.service import StorageService
from kvmmanager.services.storage.specs import PoolSpec
from kvmmanager.services.users.service import Principal
from kvmmanager.virt.calls import CallKind, op_name
from kvmmanager.virt.errors import libvirt_message
from kvmmanager.virt.events import EventBus
from kvmmanager.virt.inventory import Inventory
from kvmmanager.virt.registry import HostRegistry
from kvmmanager.virt.xml.volume import Volume

# Pools deploy may create when missing: name -> directory. Any other pool must exist.
AUTO_POOLS: dict[str, str] = {"default": "/var/lib/libvirt/images"}


@dataclass(slots=True)
class IsoStatus:
    host: str
    pool: str
    pool_exists: bool
    pool_active: bool
    volume: str
    version: str
    deployed: bool = False
    current: bool = False
    path: str | None = None
    sha256: str | None = None
    local_path: str | None = None
    local_sha256: str | None = None
    mode: str | None = None
    readable_by_qemu: bool | None = None
    other_versions: list[str] = field(default_factory=list)
    used_by: list[str] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _volume_xml(name: str, size: int) -> str:
    vol = Volume(name=name, capacity=size, target_format="raw")
    vol.allocation = 0
    # World-readable, like any distribution ISO: QEMU (libvirt-qemu) may then read it
    # even where dynamic ownership is off. It holds nothing secret.
    vol.target_mode = "0644"
    return vol.to_xml()


def _find_volume(pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return None
        raise


class IsoService:
    def __init__(
        self,
        settings: Settings,
        registry: HostRegistry,
        storage: StorageService,
        jobs: JobStarter,
        installer: AgentInstallService | None,
    ) -> None:
        """`settings`: where the ISO is found or built, and the agent's pool;
        `installer`: puts the ISO into VMs (None in a local deploy, which edits no VM)."""
        self._settings = settings
        self._registry = registry
        self._storage = storage
        self._jobs = jobs
        self._installer = installer
        # One deploy at a time per (host, pool): two install-agent calls must not both
        # create the same volume.
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def _host(self, host: str) -> Any:
        return self._registry.get(host)

    async def _call(self, host: str, fn: Any, *args: Any, kind: CallKind | None = None) -> Any:
        h = self._host(host)
        return await h.run(lambda: fn(h.conn, *args), kind=kind, op=op_name(fn))

    def _pool_name(self, pool: str | None) -> str:
        return pool or self._settings.agent.iso_pool

    # -- into a VM (services.agent_install; reached through manager.iso) ------------------

    @property
    def installer(self) -> AgentInstallService:
        if self._installer is None:
            raise Unsupported("installing the agent into a VM needs the manager")
        return self._installer

    async def install_agent(
        self, host: str, vm: str, pool: str | None = None, *, replace_cd: bool = False
    ) -> InstallResult:
        return await self.installer.install(host, vm, pool=pool, replace_cd=replace_cd)

    async def eject_agent(self, host: str, vm: str) -> dict[str, Any]:
        return await self.installer.eject(host, vm)

    async def aclose(self) -> None:
        """Cancel background work (the eject-once-connected watchers); for Manager.stop()."""
        if self._installer is not None:
            await self._installer.aclose()

    # -- local ISO -----------------------------------------------------------------------

    async def locate(self, *, build: bool = False) -> IsoLocation:
        return await asyncio.to_thread(locate_iso, self._settings, build=build)

    async def local_iso(self) -> tuple[IsoLocation, str]:
        """The ISO to deploy (built now if no current one exists) and its sha256."""
        loc = await asyncio.to_thread(require_iso, self._settings)
        assert loc.path is not None
        return loc, await asyncio.to_thread(_file_sha256, loc.path)

    # -- pool ------------------------------------------------------------------------------

    async def ensure_pool(self, host: str, pool: str) -> bool:
        """Make sure `pool` exists and is active; True when it had to be created."""
        storage = self._storage
        try:
            details = await storage.get_pool(host, pool)
        except NotFound:
            target = AUTO_POOLS.get(pool)
            if target is None:
                raise NotFound(
                    f"pool '{pool}' does not exist on host '{host}'; create it with: "
                    f"kvm-manager pool create {pool} --target DIR --host {host}",
                    field="pool",
                ) from None
            await storage.define_pool(host, PoolSpec(name=pool, type="dir", target=target))
            return True
        if not details.active:
            await storage.pool_action(host, pool, "start")
        else:
            # Someone may have put or removed files behind libvirt's back.
            await storage.pool_action(host, pool, "refresh")
        return False

    # -- deploy ----------------------------------------------------------------------------

    async def volume_sha256(self, host: str, pool: str, name: str) -> str:
        _details, download = await self._storage.open_download(host, pool, name)
        h = hashlib.sha256()
        async for chunk in download.chunks():
            h.update(chunk)
        return h.hexdigest()

    async def deploy(
        self,
        host: str,
        pool: str | None = None,
        *,
        progress: transfer.ProgressFn | None = None,
        cancelled: transfer.CancelledFn | None = None,
    ) -> DeployResult:
        """Put the current agent ISO into `pool` on `host`; a no-op when already there."""
        pool = self._pool_name(pool)
        self._host(host)  # NotFound naming the host before anything is built
        lock = self._locks.setdefault((host, pool), asyncio.Lock())
        async with lock:
            return await self._deploy(host, pool, progress, cancelled)

    async def _deploy(
        self,
        host: str,
        pool: str,
        progress: transfer.ProgressFn | None,
        cancelled: transfer.CancelledFn | None,
    ) -> DeployResult:
        loc, sha = await self.local_iso()
        assert loc.path is not None and loc.version is not None
        size = loc.path.stat().st_size
        name = volume_name(loc.version)
        created = await self.ensure_pool(host, pool)
        result = DeployResult(
            host=host,
            pool=pool,
            volume=name,
            path="",
            version=loc.version,
            sha256=sha,
            size=size,
            action="uploaded",
            pool_created=created,
            iso_source=f"{loc.source}: {loc.path}",
        )

        def lookup(conn: libvirt.virConnect) -> str | None:
            vol = _find_volume(conn.storagePoolLookupByName(pool), name)
            return None if vol is None else vol.path()

        if await self._call(host, lookup, kind="read") is not None:
            if await self.volume_sha256(host, pool, name) == sha:
                result.action = "unchanged"
            else:
                result.action = "replaced"
                await self._call(
                    host,
                    lambda c: (
                        c.storagePoolLookupByName(pool).storageVolLookupByName(name).delete(0)
                    ),
                    kind="lifecycle",
                )
        if result.action != "unchanged":
            await self._upload(host, pool, name, loc.path, size, progress, cancelled)
        result.path = await self._call(host, lookup, kind="read") or ""
        await self._remove_old_versions(host, pool, name, result)
        return result

    async def _upload(
        self,
        host: str,
        pool: str,
        name: str,
        path: Path,
        size: int,
        progress: transfer.ProgressFn | None,
        cancelled: transfer.CancelledFn | None,
    ) -> None:
        xml = _volume_xml(name, size)
        vol = await self._call(
            host, lambda c: c.storagePoolLookupByName(pool).createXML(xml, 0), kind="lifecycle"
        )
        h = self._host(host)
        # created=True: any failure or cancel deletes the volume, nothing half-written stays.
        await transfer.upload_stream(
            h, h.conn, vol, path, size, created=True, progress=progress, cancelled=cancelled
        )

    async def _remove_old_versions(
        self, host: str, pool: str, keep: str, result: DeployResult
    ) -> None:
        for vol in await self._storage.list_volumes(host, pool):
            if vol.name == keep or volume_version(vol.name) is None:
                continue
            users = self._users_of(host, vol.path)
            if users:
                result.kept_in_use[vol.name] = users
                continue
            await self._storage.delete_volume(host, pool, vol.name)
            result.removed.append(vol.name)

    def _users_of(self, host: str, path: str) -> list[str]:
        users: list[str] = self._storage.volume_path_in_use_by(host, path)
        return users

    def start_deploy_job(self, host: str, pool: str | None = None, user: Any = None) -> str:
        """Deploy as a job (kind `agent_iso.deploy`) with upload progress; returns its id."""
        pool = self._pool_name(pool)
        self._host(host)

        async def run(p: JobProgress) -> dict[str, Any]:
            def report(done: int, total: int | None) -> None:
                p(done, total, "uploading the agent ISO")

            res = await self.deploy(host, pool, progress=report, cancelled=p.cancelled)
            return res.to_dict()

        return self._jobs.start("agent_iso.deploy", f"{host}/{pool}", run, user, host=host)

    # -- status ----------------------------------------------------------------------------

    async def status(self, host: str, pool: str | None = None) -> IsoStatus:
        """What is deployed on `host` compared with the ISO this manager would deploy."""
        pool = self._pool_name(pool)
        version = agent_version()
        st = IsoStatus(
            host=host,
            pool=pool,
            pool_exists=False,
            pool_active=False,
            volume=volume_name(version),
            version=version,
        )
        loc = await self.locate(build=False)
        if loc.path is not None and loc.current:
            st.local_path = str(loc.path)
            st.local_sha256 = await asyncio.to_thread(_file_sha256, loc.path)

        def read(conn: libvirt.virConnect) -> dict[str, Any] | None:
            try:
                p = conn.storagePoolLookupByName(pool)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                    return None
                raise
            out: dict[str, Any] = {"active": bool(p.isActive()), "names": [], "vol": None}
            if not out["active"]:
                return out
            out["names"] = sorted(p.listVolumes())
            vol = _find_volume(p, st.volume)
            if vol is not None:
                model = Volume.from_xml(vol.XMLDesc(0))
                out["vol"] = {"path": vol.path(), "mode": model.target_mode}
            return out

        found = await self._call(host, read, kind="read")
        if found is None:
            st.reason = f"pool '{pool}' does not exist"
            return st
        st.pool_exists, st.pool_active = True, found["active"]
        if not st.pool_active:
            st.reason = f"pool '{pool}' is not active"
            return st
        st.other_versions = [
            n for n in found["names"] if volume_version(n) is not None and n != st.volume
        ]
        if found["vol"] is None:
            st.reason = f"volume {st.volume} is not in pool '{pool}'"
            return st
        st.deployed = True
        st.path, st.mode = found["vol"]["path"], found["vol"]["mode"]
        st.readable_by_qemu = bool(st.mode and int(st.mode, 8) & 0o004)
        st.used_by = self._users_of(host, st.path)
        st.sha256 = await self.volume_sha256(host, pool, st.volume)
        if st.local_sha256 is None:
            st.current = True
            st.reason = "deployed; no local ISO to compare its content with"
        else:
            st.current = st.sha256 == st.local_sha256
            st.reason = "current" if st.current else "content differs from the local ISO"
        return st


class _NoOwners:
    """No database here (the package's postinst, `agent-iso deploy --local`): the agent
    ISO volumes are the manager's own, recorded to no user, so there is nothing to drop."""

    def record_new_volume(
        self, principal: Principal | None, host: str, pool: str, volume: str
    ) -> None:
        return None

    def forget_volume(self, host: str, pool: str, volume: str) -> None:
        return None


class _NoJobs:
    """No job runner here: the local deploy runs in the foreground and starts no job."""

    def start(
        self,
        kind: str,
        target: str,
        fn: Callable[[JobProgress], Any],
        user: Any = None,
        *,
        host: str = "",
    ) -> str:
        raise Unsupported(f"{kind} needs the manager's job runner (not in a local deploy)")


async def deploy_local(
    uri: str,
    settings: Settings,
    pool: str | None = None,
    *,
    progress: transfer.ProgressFn | None = None,
    connect_seconds: float = 60.0,
) -> DeployResult:
    """Deploy over a connection of our own (package postinst, `agent-iso deploy --local`)."""
    # Fail at once when libvirtd does not answer, instead of retrying for connect_seconds.
    try:
        probe = await asyncio.to_thread(libvirt.open, uri)
    except libvirt.libvirtError as exc:
        raise HostUnavailable(f"cannot connect to {uri}: {libvirt_message(exc)}") from exc
    probe.close()
    # Without the database or a server: one host connection, its inventory (who uses which
    # volume) and the storage service.
    bus = EventBus()
    inventory = Inventory(bus)
    registry = HostRegistry(settings.libvirt, bus, inventory)
    jobs = _NoJobs()
    storage = StorageService(inventory, registry, _NoOwners(), jobs)
    host = await registry.add("local", uri)
    try:
        await host.wait_connected(connect_seconds)
        iso = IsoService(settings, registry, storage, jobs, installer=None)
        return await iso.deploy("local", pool, progress=progress)
    finally:
        await registry.close()
