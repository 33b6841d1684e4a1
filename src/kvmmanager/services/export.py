"""VM export and import as libvirt domain XML.

Export hands out the persistent definition (with the project's `<metadata>`, never the
VNC password). Import defines such an XML on any host: a name already taken is renamed
(`web1` -> `web1-2`), a UUID already taken is replaced, networks and pools can be
remapped, and `new_identity` gives the copy a new UUID and new MAC addresses. Every
network and volume the VM refers to must exist on the target host, so the import fails
up front, naming the disk or NIC, instead of defining a VM that cannot start.

    xml = await manager.export.export_xml("local", "web1")
    res = await manager.export.import_xml("kvm2", xml, ImportOptions(new_identity=True))

Bundles (XML plus disk volumes) are in `export_bundle.py`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid as uuidlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libvirt

from kvmmanager.core.errors import Conflict, InvalidInput, KvmmError, NotFound
from kvmmanager.services import vm_builder
from kvmmanager.services.import_policy import check_import
from kvmmanager.services.transfer import MAX_UPLOAD_BYTES
from kvmmanager.services.users import Principal
from kvmmanager.services.vm_spec import validate_name
from kvmmanager.virt.xml.domain import Domain

if TYPE_CHECKING:
    from kvmmanager.services.manager import Manager

log = logging.getLogger(__name__)

MAX_XML_BYTES = 1 << 20
MAX_RENAME_TRIES = 100
_BUNDLE_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class ImportOptions:
    name: str | None = None  # the new VM's name; taken names are refused, not renamed
    new_identity: bool = False  # new UUID and MAC addresses
    network_map: dict[str, str] = field(default_factory=dict)  # old network -> new
    pool_map: dict[str, str] = field(default_factory=dict)  # old pool -> new
    # Disk sources to use instead of the XML's, by target dev: {"vda": ("pool", "vol")}.
    # Bundles use it for the volumes they have just uploaded.
    disk_volumes: dict[str, tuple[str, str]] = field(default_factory=dict)
    # The importing user becomes the VM's owner (as the creator of a new VM does).
    owner: str | None = None
    # Admins may import anything; everyone else only what the typed builders model
    # (services/import_policy.py). Off unless the caller says the user is an admin.
    trusted: bool = False
    # Who imports: every existing volume the XML names must be theirs to use
    # (services/ownership.py), as when a VM create names it; None = no user (internal).
    principal: Principal | None = None


@dataclass
class ImportPlan:
    xml: str
    name: str
    renamed_from: str | None = None
    new_uuid: bool = False
    warnings: list[str] = field(default_factory=list)
    # The existing volumes (pool, name) the VM's disks and CD-ROMs would use, as libvirt
    # resolves them (a path with '//' or '/./' is the same volume): held to the
    # ownership rule before the VM is defined.
    volumes: list[tuple[str, str]] = field(default_factory=list)


def parse_domain(xml: str) -> Domain:
    if not isinstance(xml, str) or not xml.strip():
        raise InvalidInput("xml is empty", field="xml")
    if len(xml.encode()) > MAX_XML_BYTES:
        raise InvalidInput(f"xml is larger than {MAX_XML_BYTES} bytes", field="xml")
    try:
        dom = Domain.from_xml(xml)
    except KvmmError as exc:
        raise InvalidInput(f"not a domain XML: {exc.message}", field="xml") from None
    except Exception as exc:
        raise InvalidInput(f"not a domain XML: {exc}", field="xml") from None
    if not dom.name:
        raise InvalidInput("the domain XML has no <name>", field="xml")
    return dom


def _names(conn: libvirt.virConnect) -> set[str]:
    return {d.name() for d in conn.listAllDomains()}


def _uuid_taken(conn: libvirt.virConnect, uuid: str) -> bool:
    try:
        conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise
    return True


def _free_name(taken: set[str], base: str) -> str:
    for i in range(2, MAX_RENAME_TRIES + 2):
        candidate = f"{base}-{i}"
        if candidate not in taken:
            return candidate
    raise Conflict(f"no free name for '{base}' (tried {MAX_RENAME_TRIES})", field="name")


def _check_volume(conn: libvirt.virConnect, pool: str, volume: str, what: str) -> None:
    try:
        p = conn.storagePoolLookupByName(pool)
    except libvirt.libvirtError:
        raise NotFound(
            f"{what}: pool '{pool}' not found on the target host (remap it with pool_map)",
            field="pool_map",
        ) from None
    try:
        p.storageVolLookupByName(volume)
    except libvirt.libvirtError:
        raise NotFound(
            f"{what}: volume '{volume}' not found in pool '{pool}'", field="pool_map"
        ) from None


def plan_import(conn: libvirt.virConnect, xml: str, opts: ImportOptions) -> ImportPlan:
    """The XML to define on `conn` (blocking: runs on the host's worker thread)."""
    dom = parse_domain(xml)
    for target in opts.disk_volumes:
        # Replaced below by fresh volumes (a bundle's): their old sources do not count.
        disk = dom.devices.disk_by_target(target)
        if disk is not None:
            disk.clear_source()
            disk.type = "volume"
    if not opts.trusted:
        check_import(conn, dom.element)
    if opts.owner is not None:
        dom.manager_metadata.owner = opts.owner
    original = dom.name or ""
    taken = _names(conn)
    plan = ImportPlan(xml="", name=original)
    if opts.name is not None:
        validate_name(opts.name)
        if opts.name in taken:
            raise Conflict(f"a vm named '{opts.name}' already exists", field="name")
        plan.name = opts.name
    elif original in taken:
        plan.name, plan.renamed_from = _free_name(taken, original), original
    else:
        validate_name(original, "xml")
    dom.name = plan.name
    if opts.new_identity or (dom.uuid and _uuid_taken(conn, dom.uuid)):
        # libvirt generates a fresh UUID when the element is absent.
        dom.uuid = None
        plan.new_uuid = True
    # The emulator path is the source host's; libvirt picks the target host's default.
    dom.devices.emulator = None
    networks = {n.name() for n in conn.listAllNetworks()}
    for i, nic in enumerate(dom.devices.interfaces):
        if opts.new_identity:
            nic.mac_address = None
        if nic.type != "network":
            continue
        net = nic.source_network or ""
        net = opts.network_map.get(net, net)
        if net not in networks:
            raise NotFound(
                f"nic {i} ({nic.mac_address or 'new mac'}): network '{net}' not found on the "
                "target host (remap it with network_map)",
                field="network_map",
            )
        nic.source_network = net
    for disk in dom.devices.disks:
        what = f"disk {disk.target_dev or '?'}"
        replacement = opts.disk_volumes.get(disk.target_dev or "")
        if replacement is not None:
            disk.clear_source()
            disk.type = "volume"
            disk.source_pool, disk.source_volume = replacement
            continue
        if disk.type == "volume" and disk.source_pool and disk.source_volume:
            disk.source_pool = opts.pool_map.get(disk.source_pool, disk.source_pool)
            _check_volume(conn, disk.source_pool, disk.source_volume, what)
            plan.volumes.append((disk.source_pool, disk.source_volume))
        elif disk.type == "file" and disk.source_file:
            try:
                vol = conn.storageVolLookupByPath(disk.source_file)
            except libvirt.libvirtError:
                # A file outside every pool cannot be checked through libvirt.
                plan.warnings.append(f"{what}: {disk.source_file} is not a volume of any pool")
            else:
                plan.volumes.append((vol.storagePoolLookupByVolume().name(), vol.name()))
    plan.xml = dom.to_xml()
    return plan


def refuse_shared_disks(conn: libvirt.virConnect, plan: ImportPlan, opts: ImportOptions) -> None:
    """A writable disk another VM of this host already uses would be written by two
    guests at once (the import of a VM's own export next to it, `new_identity` or a
    rename): refused, saying how to get a copy. Read-only and `<shareable/>` disks, and
    CD-ROMs, may be shared. Called after the ownership check: its message names the VM
    using the disk, which another user's disk must not reveal."""
    dom = Domain.from_xml(plan.xml)
    candidates = [
        d
        for d in dom.devices.disks
        if d.device in (None, "disk", "lun")
        and not d.readonly
        and not d.shareable
        and (d.target_dev or "") not in opts.disk_volumes
    ]
    if not candidates:
        return
    used = vm_builder.paths_used_by_others(conn, None)
    for disk in candidates:
        path = vm_builder.disk_volume_path(conn, disk)
        other = used.get(path or "")
        if other is None:
            continue
        raise Conflict(
            f"disk {disk.target_dev or '?'}: {path} is the writable disk of vm '{other}'; "
            "the imported VM would share it and both guests would write to it. Get a copy "
            f"instead: clone the VM ('{other}') or export it as a bundle (a bundle import "
            "copies its disks), or copy the volume (volume clone) and import an XML naming "
            "the copy",
            field="xml",
        )


def _define(conn: libvirt.virConnect, plan: ImportPlan) -> str:
    return conn.defineXML(plan.xml).UUIDString()


class ExportService:
    def __init__(self, manager: Manager) -> None:
        self.m = manager

    async def export_xml(self, host: str, vm: str) -> str:
        """The persistent definition (the live one for a transient VM), without secrets."""

        def fn(dom: libvirt.virDomain) -> str:
            flags = libvirt.VIR_DOMAIN_XML_INACTIVE if dom.isPersistent() else 0
            return dom.XMLDesc(flags)

        return await self.m.vms.run_on(host, vm, fn, kind="read")

    async def import_xml(self, host: str, xml: str, opts: ImportOptions | None = None) -> dict:
        """Define `xml` on `host`; returns the VM plus what was changed on the way."""
        opts = opts or ImportOptions()
        for label, mapping in (("network_map", opts.network_map), ("pool_map", opts.pool_map)):
            if not all(isinstance(k, str) and k and isinstance(v, str) and v
                       for k, v in mapping.items()):  # fmt: skip
                raise InvalidInput(f"{label} maps names to names", field=label)

        plan = await self.m.vms.run(host, lambda conn: plan_import(conn, xml, opts), kind="read")
        if opts.principal is not None:
            # An import names volumes like a VM create does: another user's disk is
            # theirs (it was read, cloned and deleted through an imported VM).
            self.m.ownership.check_volumes(opts.principal, host, list(plan.volumes))
        await self.m.vms.run(host, lambda conn: refuse_shared_disks(conn, plan, opts), kind="read")
        uuid = await self.m.vms.run(host, lambda conn: _define(conn, plan), kind="lifecycle")
        info = await self.m.vms.refresh(host, uuid)
        log.info("imported vm %s on %s (renamed from %s)", plan.name, host, plan.renamed_from)
        return self.result(info, plan)

    # ---- bundles (XML + disks), see export_bundle.py ------------------------------------

    def bundle_dir(self) -> Path:
        path = Path(self.m.settings.data_dir) / "exports"
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def bundle_path(self, bundle_id: str) -> Path:
        if not _BUNDLE_ID.fullmatch(bundle_id or ""):
            raise InvalidInput("bundle id must be 32 hex digits", field="bundle_id")
        path = self.bundle_dir() / f"{bundle_id}.tar.gz"
        if not path.is_file():
            raise NotFound(f"bundle '{bundle_id}' not found", field="bundle_id")
        return path

    async def check_exportable(self, host: str, vm: str) -> None:
        """What the bundle job would refuse at once, refused before it is accepted: a
        host not connected (503), a VM unknown (404) or running (409)."""

        def shut_off(dom: libvirt.virDomain) -> None:
            if dom.isActive():
                raise Conflict(
                    f"vm '{dom.name()}' is running: shut it down to export a consistent copy",
                    field="vm",
                )

        await self.m.vms.run_on(host, vm, shut_off, kind="read")

    async def export_bundle(
        self,
        host: str,
        vm: str,
        progress: Callable[..., Any] | None = None,
        owner: str | None = None,
    ) -> dict[str, Any]:
        """Write the VM's bundle into the manager's data directory; returns its id. The
        bundle is `owner`'s (services/ownership.py): only they and admins download or
        delete it."""
        from kvmmanager.services import export_bundle

        bundle_id = uuidlib.uuid4().hex
        dest = self.bundle_dir() / f"{bundle_id}.tar.gz"
        # Recorded before the file exists: it is never downloadable without its owner.
        await asyncio.to_thread(self.m.ownership.record_bundle, bundle_id, owner)
        try:
            res = await export_bundle.export_bundle(self.m, host, vm, dest, progress)
        except BaseException:
            await asyncio.to_thread(self.m.ownership.forget_bundle, bundle_id)
            raise
        return {"bundle_id": bundle_id, "bytes": res["bytes"], "manifest": res["manifest"]}

    async def receive_bundle(self, chunks: AsyncIterator[bytes]) -> Path:
        """Store an uploaded bundle in the data directory (the caller deletes it)."""
        incoming = Path(self.m.settings.data_dir) / "imports"
        await asyncio.to_thread(incoming.mkdir, parents=True, exist_ok=True, mode=0o700)
        path = incoming / f"{uuidlib.uuid4().hex}.tar.gz"
        fh = await asyncio.to_thread(open, path, "wb")
        size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise InvalidInput(
                        f"a bundle is at most {MAX_UPLOAD_BYTES} bytes", field="body"
                    )
                await asyncio.to_thread(fh.write, chunk)
        except BaseException:
            fh.close()
            path.unlink(missing_ok=True)
            raise
        await asyncio.to_thread(fh.close)
        if size == 0:
            path.unlink(missing_ok=True)
            raise InvalidInput("the request body (the bundle) is empty", field="body")
        return path

    async def check_bundle(self, path: Path) -> dict[str, Any]:
        """The bundle's manifest; InvalidInput (field `bundle`) when it is not one."""
        from kvmmanager.services import export_bundle

        manifest, _xml = await asyncio.to_thread(export_bundle.read_manifest, path)
        return manifest

    def delete_bundle(self, bundle_id: str) -> None:
        self.bundle_path(bundle_id).unlink(missing_ok=True)
        self.m.ownership.forget_bundle(bundle_id)

    async def import_bundle(
        self,
        host: str,
        path: Path,
        pool: str,
        opts: ImportOptions | None = None,
        progress: Callable[..., Any] | None = None,
    ) -> dict[str, Any]:
        from kvmmanager.services import export_bundle

        self.m.registry.get(host)
        return await export_bundle.import_bundle(
            self.m, host, path, pool, opts or ImportOptions(), progress
        )

    @staticmethod
    def result(info: Any, plan: ImportPlan) -> dict[str, Any]:
        return {
            "vm": info.to_dict(),
            "renamed_from": plan.renamed_from,
            "new_uuid": plan.new_uuid,
            "warnings": plan.warnings,
        }
