"""VM clones: a new VM (name, UUID, MACs) from another, as a job with progress.

- full: every writable disk is copied with libvirt's volume clone (createXMLFrom);
- linked: every writable disk becomes a qcow2 overlay whose backing file is the source's
  disk. Writing to the source afterwards would corrupt its linked clones, so linked
  clones are made from templates only (a template never starts: see templates.py).

The source must be shut off: a running VM's disks change while they are copied. For a
running VM, `consistent="snapshot"` first takes an external disk-only snapshot (quiesced
when an agent is there), copies the then read-only images under it, and merges the
snapshot back (block commit) afterwards.

Identity: a clone of a cloud-init VM (a NoCloud seed in its CD-ROM) gets a seed of its
own with a new instance-id and hostname (the new name), so cloud-init gives it new SSH
host keys, hostname and machine-id at first boot (cloudinit.CloudInitService.reseed).

UEFI variables: when the source's NVRAM file is a volume of a pool it is copied with the
disks; otherwise the clone's <nvram> is dropped and libvirt makes a fresh one from the
firmware's template at first start (`nvram: "reset"`). TPM state belongs to the UUID, so
the clone starts with an empty TPM. CD-ROM media and read-only/shared disks are shared.

    job_id = await manager.clones.start("local", "web1", "web2", mode="full", user=user)
    result = await manager.clones.clone("local", "web1", "web2")     # same, awaited
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid as uuid_mod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import libvirt

from kvmmanager.core.errors import Conflict, InvalidInput, Unsupported
from kvmmanager.services.clones import helper_sweep
from kvmmanager.services.cloudinit.seed import CloudInitService
from kvmmanager.services.jobs.service import JobService
from kvmmanager.services.snapshots.service import SnapshotService
from kvmmanager.services.storage import image_probe
from kvmmanager.services.storage.xml import build_volume_xml
from kvmmanager.services.vms.builder import disk_volume_path, lookup, undefine_flags
from kvmmanager.services.vms.service import VmService
from kvmmanager.services.vms.spec import validate_name
from kvmmanager.virt.calls import CallKind, op_name
from kvmmanager.virt.clone_links import read_metadata
from kvmmanager.virt.registry import HostRegistry
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.vm_metadata import VmMetadata

log = logging.getLogger(__name__)
MODES = ("full", "linked")
CONSISTENT = ("refuse", "snapshot")
POLL_SECONDS = 0.5
RUNNING = (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_PAUSED)
# The temporary snapshot a running VM is copied under, tagged with its owner process so
# a later start can tell an abandoned one from another live manager's (helper_sweep).
CLONE_SNAPSHOT = helper_sweep.CLONE_SNAPSHOT


@dataclass
class DiskCopy:
    target: str
    source_path: str
    pool: str
    new_name: str
    capacity: int
    allocation: int
    format: str
    new_path: str = ""


@dataclass
class ClonePlan:
    source_name: str
    source_uuid: str
    xml: Domain  # the clone's definition, disk sources filled in once copied
    disks: list[DiskCopy] = field(default_factory=list)
    nvram: DiskCopy | None = None
    nvram_action: str = "none"  # none | copy | reset
    running: bool = False
    template: bool = False


def _new_volume_name(src_vol: str, source_vm: str, new_vm: str, target: str) -> str:
    """`web1-disk0.qcow2` of VM `web1` -> `web2-disk0.qcow2`; otherwise `web2-vda.qcow2`."""
    ext = os.path.splitext(src_vol)[1] or ".qcow2"
    if src_vol.startswith(source_vm):
        return new_vm + src_vol[len(source_vm) :]
    return f"{new_vm}-{target}{ext}"


def _volume_copy(
    conn: libvirt.virConnect, path: str, target: str, source_vm: str, new_vm: str
) -> DiskCopy:
    try:
        vol = conn.storageVolLookupByPath(path)
    except libvirt.libvirtError as exc:
        raise Unsupported(
            f"disk {target} ({path}) is not a volume of any storage pool: libvirt cannot "
            "copy it; put its directory in a pool first",
            field="vm",
        ) from exc
    pool = vol.storagePoolLookupByVolume()
    pool.refresh(0)
    outside = image_probe.foreign_backing(conn, vol)
    if outside:
        # libvirtd (a full copy) or the clone's QEMU (an overlay) would read that file
        # with root's rights on the cloner's behalf.
        raise Unsupported(
            f"disk {target} ({path}) names a backing file outside every storage pool "
            f"({outside}): it cannot be cloned",
            field="vm",
        )
    _, capacity, allocation = vol.info()
    fmt = _vol_format(vol) or "raw"
    new_name = _new_volume_name(vol.name(), source_vm, new_vm, target)
    if new_name in pool.listVolumes():
        raise Conflict(f"volume '{new_name}' already exists in pool '{pool.name()}'", field="name")
    return DiskCopy(target, path, pool.name(), new_name, capacity, allocation, fmt)


def _vol_format(vol: libvirt.virStorageVol) -> str | None:
    from kvmmanager.virt.xml.volume import Volume

    fmt: str | None = Volume.from_xml(vol.XMLDesc(0)).target_format
    return fmt


def plan_clone(
    conn: libvirt.virConnect, host: str, vm: str, new_name: str, mode: str, consistent: str
) -> ClonePlan:
    dom = lookup(conn, host, vm)
    try:
        conn.lookupByName(new_name)
        raise Conflict(f"a vm named '{new_name}' already exists on host '{host}'", field="name")
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
    running = dom.state()[0] in RUNNING
    if running and mode == "linked":
        raise Conflict(f"vm '{dom.name()}' is running: a template must be shut off", field="vm")
    if running and consistent != "snapshot":
        raise Conflict(
            f"vm '{dom.name()}' is running: its disks change while they are copied. Shut it "
            "down, or ask for consistent='snapshot' (a temporary external snapshot, quiesced "
            "when an agent is there, is copied and merged back)",
            field="vm",
        )
    meta = read_metadata(dom)
    if mode == "linked" and not meta.template:
        raise Conflict(
            f"vm '{dom.name()}' is not a template: a linked clone shares its disks, which "
            "must never change again; mark it as a template first, or make a full clone",
            field="mode",
        )
    if running and dom.listAllSnapshots():
        raise Conflict(
            f"vm '{dom.name()}' has snapshots: a consistent copy of a running VM needs a "
            "temporary external snapshot, which libvirt cannot mix with them; shut it down",
            field="vm",
        )
    xml = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    plan = ClonePlan(dom.name(), dom.UUIDString(), xml, running=running, template=meta.template)
    for d in xml.devices.disks:
        shared = d.device not in (None, "disk", "lun") or d.readonly or d.shareable
        if shared or not d.has_media:
            continue
        if d.type == "volume" and d.source_pool and d.source_volume:
            # A disk naming its pool volume (as bundle imports define them): the same copy,
            # found by the volume's path.
            path = disk_volume_path(conn, d)
            if path is None:
                raise Unsupported(
                    f"disk {d.target_dev}: volume '{d.source_volume}' is not in pool "
                    f"'{d.source_pool}': there is nothing to copy",
                    field="vm",
                )
        elif d.type == "file" and d.source_file:
            path = d.source_file
        else:
            raise Unsupported(
                f"disk {d.target_dev} is a {d.type} disk: only disks on pool volumes (file "
                "or volume disks) are cloned",
                field="vm",
            )
        plan.disks.append(_volume_copy(conn, path, d.target_dev, dom.name(), new_name))
    if xml.os.nvram:
        try:
            plan.nvram = _volume_copy(conn, xml.os.nvram, "nvram", dom.name(), new_name)
            plan.nvram_action = "copy"
        except Unsupported:
            plan.nvram_action = "reset"
    elif xml.os.is_uefi:
        # Firmware auto-selection: libvirt derives the NVRAM path from the VM's name at
        # each start, so the clone gets a fresh store from the firmware's template.
        plan.nvram_action = "reset"
    names = [c.new_name for c in plan.disks]
    if len(set(names)) != len(names):
        raise Conflict("two disks would get the same clone volume name", field="name")
    return plan


def finish_xml(
    plan: ClonePlan,
    new_name: str,
    mode: str,
    created_by: str | None,
    new_uuid: str | None = None,
) -> str:
    """The clone's definition; `new_uuid` None lets libvirt choose one."""
    x = plan.xml
    x.name = new_name
    x.uuid = new_uuid
    for nic in x.devices.interfaces:
        nic.mac_address = None  # libvirt generates a fresh one
    for copy in plan.disks:
        disk = x.devices.disk_by_target(copy.target)
        assert disk is not None
        if disk.type == "volume":
            # The clone names its own volume the way the source named its one.
            disk.source_pool, disk.source_volume = copy.pool, copy.new_name
        else:
            disk.source_file = copy.new_path
        if mode == "linked":
            disk.driver_type = "qcow2"
    if plan.nvram_action == "copy" and plan.nvram is not None:
        x.os.nvram = plan.nvram.new_path
    elif plan.nvram_action == "reset":
        template = x.os.nvram_template
        x.os.nvram = None
        if template and x.os.loader:
            x.os.nvram_template = template
    meta = VmMetadata(x.manager_metadata.element)
    meta.template = None
    meta.cloned_from, meta.cloned_from_name, meta.clone_kind = (
        plan.source_uuid,
        plan.source_name,
        mode,
    )
    if created_by:
        meta.created_by = created_by
    return x.to_xml()


class CloneService:
    def __init__(
        self,
        database_url: str,
        registry: HostRegistry,
        jobs: JobService,
        vms: VmService,
        snapshots: SnapshotService,
        cloudinit: CloudInitService,
    ) -> None:
        """`database_url`: names this manager's database in the temporary snapshot's
        owner tag (helper_sweep.data_id), never stored itself."""
        self._data_id = helper_sweep.data_id(database_url)
        self._registry = registry
        self._jobs = jobs
        self._vms = vms
        self._snapshots = snapshots
        self._cloudinit = cloudinit
        # (host, source uuid) -> clones of this process copying under its snapshot now.
        self._snapshots_in_use: dict[tuple[str, str], int] = {}

    def snapshots_in_use(self, host: str) -> set[str]:
        """UUIDs of `host`'s VMs this process is cloning under a temporary snapshot."""
        return {uuid for (h, uuid) in self._snapshots_in_use if h == host}

    def _release_snapshot(self, key: tuple[str, str]) -> None:
        left = self._snapshots_in_use.get(key, 0) - 1
        if left > 0:
            self._snapshots_in_use[key] = left
        else:
            self._snapshots_in_use.pop(key, None)

    async def _run(
        self,
        host: str,
        fn: Callable[[libvirt.virConnect], Any],
        kind: CallKind | None = None,
        op: str | None = None,
    ) -> Any:
        """Inside the clone job, calls default to the `job` kind (no deadline): only the
        disk copies are that long; every other call names its kind."""
        hc = self._registry.get(host)
        return await hc.run(lambda: fn(hc.conn), kind=kind, op=op or op_name(fn))

    def _check(self, new_name: str, mode: str, consistent: str) -> None:
        validate_name(new_name, "name")
        if mode not in MODES:
            raise InvalidInput(f"mode must be one of {', '.join(MODES)}", field="mode")
        if consistent not in CONSISTENT:
            raise InvalidInput(
                f"consistent must be one of {', '.join(CONSISTENT)}", field="consistent"
            )

    async def start(
        self,
        host: str,
        vm: str,
        new_name: str,
        *,
        mode: str = "full",
        consistent: str = "refuse",
        start: bool = False,
        user: Any = None,
    ) -> str:
        """Check now (4xx), then clone as a `vm.clone` job; returns the job id."""
        self._check(new_name, mode, consistent)
        await self._run(
            host, lambda c: plan_clone(c, host, vm, new_name, mode, consistent), kind="read"
        )
        created_by = getattr(user, "username", user)

        async def job(progress: Any) -> dict[str, Any]:
            return await self.clone(
                host, vm, new_name, mode=mode, consistent=consistent, start=start,
                progress=progress, created_by=created_by,
            )  # fmt: skip

        return self._jobs.start("vm.clone", f"{host}/{vm}", job, user, host=host)

    async def clone(
        self,
        host: str,
        vm: str,
        new_name: str,
        *,
        mode: str = "full",
        consistent: str = "refuse",
        start: bool = False,
        progress: Any = None,
        created_by: str | None = None,
    ) -> dict[str, Any]:
        self._check(new_name, mode, consistent)
        plan = await self._run(
            host, lambda c: plan_clone(c, host, vm, new_name, mode, consistent), kind="read"
        )
        snapshot = None
        if plan.running:
            # Should the server die before the `finally` below, the next start merges
            # the source back off its overlay (job_undo); recorded first, so undone last.
            await _undo_on_interrupt(
                progress, "delete_snapshot", host=host, uuid=plan.source_uuid,
                name=CLONE_SNAPSHOT, vm=plan.source_name,
            )  # fmt: skip
            key = (host, plan.source_uuid)
            self._snapshots_in_use[key] = self._snapshots_in_use.get(key, 0) + 1
            try:
                snapshot = await self._snapshots.create(
                    host,
                    plan.source_uuid,
                    name=CLONE_SNAPSHOT,
                    description=helper_sweep.owner_description(self._data_id),
                    kind="external",
                )
            finally:
                if snapshot is None:
                    self._release_snapshot(key)
        made: list[tuple[str, str]] = []
        identity = "none"
        try:
            await self._copy_all(host, plan, mode, made, progress)
            identity = await self._reset_identity(host, plan, new_name, made)
            # Our own UUID, so a restart after a kill -9 can find this definition (and
            # only this one) to remove it.
            new_uuid = str(uuid_mod.uuid4())
            xml = finish_xml(plan, new_name, mode, created_by, new_uuid)
            await _undo_on_interrupt(
                progress, "undefine_domain", host=host, uuid=new_uuid, name=new_name
            )
            uuid = await self._run(
                host, lambda c: _define(c, xml, start), kind="lifecycle", op="define the clone"
            )
        except BaseException:
            await asyncio.shield(self._discard(host, made))
            raise
        finally:
            if snapshot is not None:
                try:
                    await asyncio.shield(
                        self._snapshots.delete(host, plan.source_uuid, CLONE_SNAPSHOT)
                    )
                finally:
                    self._release_snapshot((host, plan.source_uuid))
        with contextlib.suppress(Exception):
            await self._vms.refresh(host, uuid)
        return {
            "host": host,
            "name": new_name,
            "uuid": uuid,
            "source": plan.source_name,
            "mode": mode,
            "volumes": [c.new_path for c in plan.disks],
            "nvram": plan.nvram_action,
            "tpm": "fresh" if plan.xml.devices.tpms else "none",
            "consistency": (snapshot or {}).get("consistency", {"level": "offline"}),
            "identity": identity,
            "started": start,
        }

    async def _reset_identity(
        self, host: str, plan: ClonePlan, new_name: str, made: list[tuple[str, str]]
    ) -> str:
        """A clone of a cloud-init VM gets its own seed (new instance-id and hostname):
        at its first boot cloud-init makes new SSH host keys, sets the hostname and a
        new machine-id. Returns "cloud-init", or "none" for a VM without a seed."""
        cdroms = [c.source_file for c in plan.xml.devices.cdroms() if c.source_file]
        res = await self._cloudinit.reseed(host, cdroms, new_name)
        if res is None:
            return "none"
        old_path, pool, volume, path = res
        made.append((pool, volume))
        for cd in plan.xml.devices.cdroms():
            if cd.source_file == old_path:
                cd.source_file = path
        return "cloud-init"

    async def _copy_all(
        self, host: str, plan: ClonePlan, mode: str, made: list[tuple[str, str]], progress: Any
    ) -> None:
        copies = plan.disks + ([plan.nvram] if plan.nvram is not None else [])
        total = max(1, sum(c.allocation for c in copies)) if mode == "full" else len(copies)
        done = 0
        for c in copies:
            linked = mode == "linked" and c is not plan.nvram
            await _undo_on_interrupt(
                progress, "delete_volume", host=host, pool=c.pool, volume=c.new_name
            )
            task = asyncio.ensure_future(
                self._run(
                    host,
                    lambda conn, c=c, lk=linked: _copy(conn, c, lk),
                    kind="job",
                    op=f"copy disk {c.target}",
                )
            )
            try:
                while not task.done():
                    await asyncio.wait({task}, timeout=POLL_SECONDS)
                    if not task.done() and progress is not None and not linked:
                        now = await self._run(
                            host,
                            lambda conn, c=c: _allocation(conn, c),
                            kind="read",
                            op=f"allocation of the copy of {c.target}",
                        )
                        progress(min(done + now, total), total, f"copying {c.target}")
            except BaseException:
                # libvirt cannot interrupt a copy: let it end, then the caller deletes it.
                with contextlib.suppress(BaseException):
                    await asyncio.shield(task)
                if task.done() and not task.cancelled() and task.exception() is None:
                    made.append((c.pool, c.new_name))
                raise
            c.new_path = task.result()
            made.append((c.pool, c.new_name))
            done += c.allocation if mode == "full" else 1
            if progress is not None:
                progress(min(done, total), total, f"{c.target} done")
        if progress is not None:
            # Allocations can be 0 (sparse, the test driver): end on total/total anyway.
            progress(total, total, "disks copied")

    async def _discard(self, host: str, made: list[tuple[str, str]]) -> None:
        def rm(conn: libvirt.virConnect) -> None:
            for pool, name in made:
                try:
                    conn.storagePoolLookupByName(pool).storageVolLookupByName(name).delete(0)
                except libvirt.libvirtError as exc:
                    log.warning("clone cleanup: %s/%s stays: %s", pool, name, exc)

        with contextlib.suppress(Exception):
            await self._run(host, rm, kind="lifecycle", op="remove the clone's volumes")


async def _undo_on_interrupt(progress: Any, action: str, **args: str) -> None:
    """Record (in the job row) what the next start removes should the server die before
    the clone ends: the source's temporary snapshot before taking it, each new volume
    before it is made, the definition before defining.
    A clone awaited outside a job (no JobProgress) has nothing to record into."""
    record = getattr(progress, "undo_on_interrupt", None)
    if record is not None:
        await asyncio.to_thread(record, action, **args)


def _copy(conn: libvirt.virConnect, c: DiskCopy, linked: bool) -> str:
    pool = conn.storagePoolLookupByName(c.pool)
    if linked:
        xml = build_volume_xml(c.new_name, c.capacity, "qcow2", backing=(c.source_path, c.format))
        return str(pool.createXML(xml, 0).path())
    src = conn.storageVolLookupByPath(c.source_path)
    xml = build_volume_xml(c.new_name, c.capacity, c.format)
    return str(pool.createXMLFrom(xml, src, 0).path())


def _allocation(conn: libvirt.virConnect, c: DiskCopy) -> int:
    try:
        return int(
            conn.storagePoolLookupByName(c.pool).storageVolLookupByName(c.new_name).info()[2]
        )
    except libvirt.libvirtError:
        return 0  # not visible yet


def _define(conn: libvirt.virConnect, xml: str, start: bool) -> str:
    dom = conn.defineXML(xml)
    if start:
        try:
            dom.create()
        except libvirt.libvirtError:
            dom.undefineFlags(undefine_flags(dom))
            raise
    return str(dom.UUIDString())
