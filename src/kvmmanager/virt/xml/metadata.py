"""The product's own metadata in a domain: ``<metadata><kvmm:manager>...`` (decision 2).

Other applications' metadata (libosinfo, virt-manager...) lives next to ours in
``<metadata>`` under their own namespaces and is never touched.

Through the whole domain XML::

    dom = Domain.from_xml(xml)
    meta = dom.manager_metadata            # reading creates nothing
    meta.tags = ["web", "prod"]            # creates <metadata><kvmm:manager> when needed
    meta.owner = "alice"
    meta.agent_quiesce = "never"

Through libvirt's metadata API (``virDomainGetMetadata``/``SetMetadata`` with
``VIR_DOMAIN_METADATA_ELEMENT``), which hands over the element WITHOUT its namespace::

    meta = ManagerMetadata.from_metadata_api(dom.metadata(ELEMENT, NS_URI))
    meta.tags = ["web"]
    dom.setMetadata(ELEMENT, meta.to_metadata_api(), NS_PREFIX, NS_URI, flags)
"""

from __future__ import annotations

import copy
from typing import Self

from lxml import etree

from kvmmanager.virt.xml.base import XMLObject, XMLProperty, XMLValueList, parse_xml

NS_URI = "https://kvmmanager.org/xmlns/domain/1"
NS_PREFIX = "kvmm"

QUIESCE_POLICIES = ("auto", "never")


class ManagerMetadata(XMLObject):
    TAG = "kvmm:manager"
    NSMAP = {NS_PREFIX: NS_URI}

    tags = XMLValueList("kvmm:tags/kvmm:tag", doc="free-form labels, in order")
    owner = XMLProperty("kvmm:owner", doc="username of the VM's owner")
    created_by = XMLProperty("kvmm:created-by", doc="who/what created the VM")
    agent_enabled = XMLProperty("kvmm:agent/@enabled", kind=bool)
    agent_quiesce = XMLProperty(
        "kvmm:agent/@quiesce", choices=QUIESCE_POLICIES, doc="freeze filesystems for snapshots"
    )

    @classmethod
    def from_metadata_api(cls, text: str | bytes) -> Self:
        """Parse what ``virDomainGetMetadata(ELEMENT, NS_URI)`` returns (no namespace)."""
        root = parse_xml(text, what="metadata")
        for el in root.iter():
            if isinstance(el.tag, str) and etree.QName(el).namespace is None:
                el.tag = f"{{{NS_URI}}}{etree.QName(el).localname}"
        fresh = etree.Element(root.tag, nsmap={NS_PREFIX: NS_URI})
        fresh.text = root.text
        fresh.attrib.update(root.attrib)
        fresh.extend(list(root))
        return cls(fresh)

    def to_metadata_api(self) -> str:
        """The element without namespace, as ``virDomainSetMetadata(ELEMENT, ...)`` wants it
        (libvirt puts it back under ``NS_URI`` with prefix ``NS_PREFIX``)."""
        el = self._element()
        clone = copy.deepcopy(el) if el is not None else etree.Element(f"{{{NS_URI}}}manager")
        for node in clone.iter():
            if isinstance(node.tag, str) and etree.QName(node).namespace == NS_URI:
                node.tag = etree.QName(node).localname
        etree.cleanup_namespaces(clone)
        return etree.tostring(clone, encoding="unicode")
