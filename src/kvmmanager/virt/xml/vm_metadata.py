"""The product metadata plus what clones and templates add to it.

``ManagerMetadata`` (metadata.py) is owned by the XML model work; this subclass adds the
fields of the clone/template work without touching it. It reads and writes the same
``<kvmm:manager>`` element, so every other field is kept::

    meta = VmMetadata.from_metadata_api(dom.metadata(ELEMENT, NS_URI, flags))
    meta.template = True
    meta.cloned_from = "9c1f...-uuid"
"""

from __future__ import annotations

from kvmmanager.virt.xml.base import XMLProperty
from kvmmanager.virt.xml.metadata import ManagerMetadata


class VmMetadata(ManagerMetadata):
    template = XMLProperty("kvmm:template/@enabled", kind=bool, doc="a template, not a VM")
    cloned_from = XMLProperty("kvmm:cloned-from/@uuid", doc="UUID of the clone's source")
    cloned_from_name = XMLProperty("kvmm:cloned-from/@name", doc="its name at clone time")
    clone_kind = XMLProperty("kvmm:cloned-from/@kind", choices=("full", "linked"))
