"""Restoring a backup made with libvirt's backup API, through libvirt's storage API.

Every disk is one volume clone (`createXMLFrom`) of the backup's volume: for an
incremental that volume is a qcow2 overlay on its parent backup's volume, and the clone
reads through the whole chain into one standalone image (libvirt runs the conversion).

- to a new VM: the definition recorded at backup time under a new name, a new UUID and
  new MAC addresses, its disks the copies (in the backup's pool unless another is
  named); UEFI variables start from the firmware's template, a TPM starts empty;
- over the original: the VM must be stopped and have no snapshots (they live in the
  images being replaced); its checkpoints are dropped (the next backup is full) and
  each disk volume is deleted and re-created, same pool, name and format, from the
  backup. The caller must confirm: what the VM wrote since is lost.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import libvirt

from kvmmanager.core.errors import Conflict, InvalidInput, NotFound, Unsupported
from kvmmanager.services.storage.xml import active_pool, lookup_volume, volume_exists
from kvmmanager.virt.errors import libvirt_message
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.vm_metadata import VmMetadata
from kvmmanager.virt.xml.volume import Volume

RUNNING = (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_PAUSED)
RESTORE_FORMATS = ("qcow2", "raw")


@dataclass
class Copy:
    disk: str
    source_pool: str
    source_volume: str
    pool: str
    volume: str
    capacity: int
    format: str
    path: str = ""


def _fmt(xml: Domain, target: str) -> str:
    d = xml.devices.disk_by_target(target)
    f = (d.driver_type if d is not None else None) or "qcow2"
    return f if f in RESTORE_FORMATS else "qcow2"


def plan_new(
    conn: libvirt.virConnect, host: str, rec: dict[str, Any], name: str, pool: str
) -> list[Copy]:
    """The copies a restore to a new VM `name` makes; 409 on any clash."""
    try:
        conn.lookupByName(name)
        raise Conflict(f"a vm named '{name}' already exists on host '{host}'", field="name")
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
    p = active_pool(conn, pool)
    xml = Domain.from_xml(rec["domain_xml"])
    copies = []
    for v in rec["volumes"]:
        fmt = _fmt(xml, v["disk"])
        c = Copy(
            v["disk"],
            rec["pool"],
            v["volume"],
            pool,
            f"{name}-{v['disk']}.{fmt}",
            int(v["capacity"]),
            fmt,
        )
        if volume_exists(p, c.volume):
            raise Conflict(f"volume '{c.volume}' already exists in pool '{pool}'", field="name")
        copies.append(c)
    _sources(conn, copies)
    return copies


def _sources(conn: libvirt.virConnect, copies: list[Copy]) -> None:
    for c in copies:
        try:
            lookup_volume(active_pool(conn, c.source_pool), c.source_volume)
        except NotFound as exc:
            raise Conflict(
                f"the backup's volume {c.source_pool}/{c.source_volume} is gone", field="backup"
            ) from exc


def copy_one(conn: libvirt.virConnect, c: Copy) -> str:
    src = lookup_volume(active_pool(conn, c.source_pool), c.source_volume)
    v = Volume(name=c.volume, capacity=c.capacity, target_format=c.format)
    if c.format == "qcow2":
        v.compat = "1.1"  # dirty bitmaps: the restored VM can have incremental backups
    return active_pool(conn, c.pool).createXMLFrom(v.to_xml(), src, 0).path()


def delete_copies(conn: libvirt.virConnect, copies: list[Copy]) -> None:
    for c in copies:
        if not c.path:
            continue
        with contextlib.suppress(libvirt.libvirtError):
            conn.storagePoolLookupByName(c.pool).storageVolLookupByName(c.volume).delete(0)


def new_domain_xml(
    rec: dict[str, Any], name: str, copies: list[Copy], created_by: str | None
) -> str:
    x = Domain.from_xml(rec["domain_xml"])
    x.name = name
    x.uuid = None
    for nic in x.devices.interfaces:
        nic.mac_address = None  # libvirt generates a fresh one
    for c in copies:
        d = x.devices.disk_by_target(c.disk)
        if d is None:
            raise Conflict(f"the backup's definition has no disk {c.disk}", field="backup")
        d.clear_source()
        d.type = "file"
        d.source_file = c.path
        d.driver_type = c.format
    if x.os.nvram or x.os.is_uefi:
        template = x.os.nvram_template
        x.os.nvram = None
        if template and x.os.loader:
            x.os.nvram_template = template
    meta = VmMetadata(x.manager_metadata.element)
    meta.template = None
    if created_by:
        meta.created_by = created_by
    return x.to_xml()


def define(conn: libvirt.virConnect, xml: str, start: bool) -> str:
    dom = conn.defineXML(xml)
    if start:
        try:
            dom.create()
        except libvirt.libvirtError:
            dom.undefine()
            raise
    return dom.UUIDString()


def plan_over(conn: libvirt.virConnect, host: str, rec: dict[str, Any]) -> list[Copy]:
    """The copies a restore over the original VM makes; 404/409 when it cannot."""
    try:
        dom = conn.lookupByUUIDString(rec["vm_uuid"])
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
        raise NotFound(
            f"vm '{rec['vm']}' (uuid {rec['vm_uuid']}) no longer exists on host "
            f"'{host}': restore the backup to a new vm instead",
            field="vm",
        ) from exc
    if dom.state()[0] in RUNNING:
        raise Conflict(
            f"vm '{dom.name()}' is running: shut it down before restoring over it", field="vm"
        )
    if dom.snapshotNum(0):
        raise Conflict(
            f"vm '{dom.name()}' has snapshots, which live in the disk images a restore "
            "replaces: delete them first, or restore to a new vm",
            field="vm",
        )
    xml = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    copies = []
    for v in rec["volumes"]:
        d = xml.devices.disk_by_target(v["disk"])
        if d is None or not d.source_file:
            raise Conflict(
                f"vm '{dom.name()}' has no file disk {v['disk']} any more: restore to a new vm",
                field="vm",
            )
        try:
            vol = conn.storageVolLookupByPath(d.source_file)
        except libvirt.libvirtError as exc:
            raise Unsupported(
                f"disk {v['disk']} ({d.source_file}) is not a volume of any storage pool: "
                "libvirt cannot replace it; restore to a new vm",
                field="vm",
            ) from exc
        fmt = d.driver_type if d.driver_type in RESTORE_FORMATS else "qcow2"
        pool = vol.storagePoolLookupByVolume().name()
        c = Copy(v["disk"], rec["pool"], v["volume"], pool, vol.name(), int(v["capacity"]), fmt)
        c.path = d.source_file
        copies.append(c)
    _sources(conn, copies)
    return copies


def replace_one(conn: libvirt.virConnect, c: Copy) -> str:
    """Delete the VM's volume and clone the backup into its place (same pool/name)."""
    with contextlib.suppress(NotFound):
        lookup_volume(active_pool(conn, c.pool), c.volume).delete(0)
    try:
        return copy_one(conn, c)
    except libvirt.libvirtError as exc:
        raise Conflict(
            f"disk {c.disk}: the old volume {c.pool}/{c.volume} was deleted but the copy "
            f"failed ({libvirt_message(exc)}); the backup is intact, retry the restore",
            field="backup",
        ) from exc


def drop_checkpoints(conn: libvirt.virConnect, uuid: str) -> list[str]:
    """Forget every checkpoint of the VM (metadata only: the bitmaps go with the images
    being replaced); answers the names of all of them, children included (it named only
    the roots, so a full+incremental chain reported one dropped while both went)."""
    dom = conn.lookupByUUIDString(uuid)
    names = [cp.getName() for cp in dom.listAllCheckpoints(0)]
    for cp in dom.listAllCheckpoints(libvirt.VIR_DOMAIN_CHECKPOINT_LIST_ROOTS):
        cp.delete(
            libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY
            | libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_CHILDREN
        )
    return names


def check_restore_args(mode: str, name: str | None, confirm: bool) -> None:
    if mode not in ("new", "original"):
        raise InvalidInput("mode must be 'new' or 'original'", field="mode")
    if mode == "new" and not name:
        raise InvalidInput("a restore to a new vm needs its name", field="name")
    if mode == "original" and not confirm:
        raise InvalidInput(
            "restoring over the vm discards everything it wrote since the backup: confirm it",
            field="confirm",
        )
