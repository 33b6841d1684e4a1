"""Deleting a shut-off VM, optionally with its volumes, and the typed result of it.

`VmDeleted` is what the service answers and what the API and the web UI read: one typed
object instead of a dict whose keys each layer guessed (the web UI read
`volumes_removed` while the service wrote `deleted_volumes`, so its toast never showed
the count).

Which volumes go with `remove_volumes`: every disk of the VM, whether the domain names it
by path (`type='file'/'block'`) or by pool and volume (`type='volume'`, as bundle imports
make them), unless another VM on the host uses it; of CD-ROM media only the VM's own
cloud-init seed (`<name>-seed.iso`, a NoCloud ISO) goes: ISOs in general are shared
install media and stay.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import libvirt

from kvmmanager.core.errors import Conflict
from kvmmanager.services.cloudinit.seed_volume import is_seed
from kvmmanager.services.vms import builder as vm_builder
from kvmmanager.services.vms.spec import SEED_SUFFIX
from kvmmanager.virt.clone_links import linked_clones
from kvmmanager.virt.xml.domain import Domain

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeptVolume:
    path: str
    reason: str


@dataclass(slots=True)
class VmDeleted:
    host: str
    name: str
    uuid: str
    deleted_volumes: list[str] = field(default_factory=list)
    kept_volumes: list[KeptVolume] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _candidates(conn: libvirt.virConnect, xml: Domain, name: str) -> list[str]:
    """Paths deleting the VM with its volumes may remove: its disks and its own seed."""
    out: list[str] = []
    for disk in xml.devices.disks:
        path = vm_builder.disk_volume_path(conn, disk)
        if path is None:
            continue
        is_disk = disk.device in (None, "disk", "lun")
        if is_disk or (disk.device == "cdrom" and _own_seed(conn, path, name)):
            out.append(path)
    return out


def _own_seed(conn: libvirt.virConnect, path: str, name: str) -> bool:
    return path.rsplit("/", 1)[-1] == f"{name}{SEED_SUFFIX}" and is_seed(conn, path)


def delete_blocking(dom: libvirt.virDomain, host: str, remove_volumes: bool) -> VmDeleted:
    """Undefine `dom` (shut off: the caller checked; NVRAM and TPM state too) and, with
    `remove_volumes`, delete its volumes; what stayed is listed with the reason."""
    name, uuid = dom.name(), dom.UUIDString()
    conn = dom.connect()
    xml = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    result = VmDeleted(host=host, name=name, uuid=uuid)
    to_delete: list[libvirt.virStorageVol] = []
    if remove_volumes:
        # Linked clones read this VM's disks as their backing files, which no domain XML
        # names: deleting them would silently break every clone.
        if clones := linked_clones(conn, uuid):
            raise Conflict(
                f"vm '{name}' backs linked clones ({', '.join(clones)}): delete them first, "
                "or delete this VM without its volumes",
                field="remove_volumes",
            )
        used = vm_builder.paths_used_by_others(conn, uuid)
        for path in dict.fromkeys(_candidates(conn, xml, name)):
            if path in used:
                result.kept_volumes.append(KeptVolume(path, f"used by vm '{used[path]}'"))
                continue
            try:
                to_delete.append(conn.storageVolLookupByPath(path))
            except libvirt.libvirtError:
                result.kept_volumes.append(KeptVolume(path, "not a volume of any storage pool"))
    if dom.isPersistent():
        dom.undefineFlags(vm_builder.undefine_flags(dom))
    for vol in to_delete:
        path = vol.path()
        try:
            vol.delete(0)
            result.deleted_volumes.append(path)
        except libvirt.libvirtError as exc:
            # The VM is gone already; say which volume stayed and why instead of failing.
            result.kept_volumes.append(KeptVolume(path, exc.get_error_message() or str(exc)))
    log.info("deleted vm %s on %s (volumes removed: %d)", name, host, len(result.deleted_volumes))
    return result
