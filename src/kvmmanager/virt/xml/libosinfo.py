"""libosinfo's metadata in a domain, as virt-manager and virt-install write it::

    <metadata>
      <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
        <libosinfo:os id="http://debian.org/debian/11"/>
      </libosinfo:libosinfo>
    </metadata>

Other tools (virt-manager, Cockpit, GNOME Boxes) read the guest's OS from it, so a VM
made here is known to them as the same OS and the other way round. Through the whole
domain XML: ``Domain.os_info.os_id``.
"""

from __future__ import annotations

from kvmmanager.virt.xml.base import XMLObject, XMLProperty

NS_URI = "http://libosinfo.org/xmlns/libvirt/domain/1.0"
NS_PREFIX = "libosinfo"


class LibosinfoMetadata(XMLObject):
    TAG = "libosinfo:libosinfo"
    NSMAP = {NS_PREFIX: NS_URI}

    os_id = XMLProperty("libosinfo:os/@id", doc="osinfo-db's OS id, a URI")
