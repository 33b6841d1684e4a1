"""What a domain's product metadata says of clones and templates, read through libvirt:
the metadata itself, and which VMs of a host are linked clones of a given VM. Read by the
clone, template and delete services alike, below all of them."""

from __future__ import annotations

import libvirt

from kvmmanager.core.errors import Conflict
from kvmmanager.virt import scan
from kvmmanager.virt.xml.metadata import NS_URI
from kvmmanager.virt.xml.vm_metadata import VmMetadata


def read_metadata(dom: libvirt.virDomain) -> VmMetadata:
    try:
        return VmMetadata.from_metadata_api(
            dom.metadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS_URI, libvirt.VIR_DOMAIN_AFFECT_CONFIG
            )
        )
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            raise
        return VmMetadata()


def linked_clones(conn: libvirt.virConnect, uuid: str) -> list[str]:
    """Names of this host's VMs made as linked clones of the VM `uuid`."""
    out = []
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT):
        try:
            meta = read_metadata(dom)
        except libvirt.libvirtError as exc:
            if scan.is_gone(exc):
                continue
            raise
        if meta.cloned_from == uuid and meta.clone_kind == "linked":
            out.append(dom.name())
    return sorted(out)


def is_template(dom: libvirt.virDomain) -> bool:
    return bool(read_metadata(dom).template)


def check_startable(dom: libvirt.virDomain) -> None:
    """Raise Conflict for a template: starting it would change the disks its linked
    clones are built on."""
    if is_template(dom):
        raise Conflict(
            f"vm '{dom.name()}' is a template: templates are never started (their disks "
            "back linked clones); deploy a clone, or unmark it first",
            field="vm",
        )
