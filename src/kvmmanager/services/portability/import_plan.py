"""Planning the import of a domain XML onto a host: the options a caller gives, and the
checks and rewrites (name, UUID, networks, volumes, shared disks) that turn the XML into
what is defined. Blocking functions that run on the host's worker thread. Read by the
XML import (export.py) and the bundle import (portability/bundle.py) alike, so neither imports
the other for it."""

from __future__ import annotations

from dataclasses import dataclass, field

import libvirt

from kvmmanager.core.errors import Conflict, InvalidInput, KvmmError, NotFound
from kvmmanager.services.portability.import_policy import check_import
from kvmmanager.services.users.service import Principal
from kvmmanager.services.vms import builder as vm_builder
from kvmmanager.services.vms.spec import validate_name
from kvmmanager.virt.xml.domain import Domain

MAX_XML_BYTES = 1 << 20
MAX_RENAME_TRIES = 100


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
    # (services/portability/import_policy.py). Off unless the caller says the user is an admin.
    trusted: bool = False
    # Who imports: every existing volume the XML names must be theirs to use
    # (services/users/ownership.py), as when a VM create names it; None = no user (internal).
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
