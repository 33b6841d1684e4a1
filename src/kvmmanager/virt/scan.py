"""Walks over every domain of a host, tolerating domains that vanish mid-walk.

A host is shared: another client (a transient probe guest, another manager, virsh) may
undefine or stop a domain between `listAllDomains()` and the next call on its handle.
Questions such as "who else uses this disk?" must then skip that domain, not fail with
"Domain not found" about a VM the user never mentioned.
"""

from __future__ import annotations

from collections.abc import Iterator

import libvirt


def is_gone(exc: libvirt.libvirtError) -> bool:
    return bool(exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN)


def definitions(conn: libvirt.virConnect) -> Iterator[tuple[libvirt.virDomain, str]]:
    """(domain, XML) for the live definition of every running domain and the persistent
    definition of every defined one: a resource named in either is in use."""
    for dom in conn.listAllDomains():
        try:
            flags = [0] if dom.isActive() else []
            if dom.isPersistent():
                flags.append(libvirt.VIR_DOMAIN_XML_INACTIVE)
            xmls = [dom.XMLDesc(f) for f in flags]
        except libvirt.libvirtError as exc:
            if is_gone(exc):
                continue
            raise
        for xml in xmls:
            yield dom, xml
