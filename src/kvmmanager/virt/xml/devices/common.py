"""What every device shares: ``<alias name=...>`` (user aliases must start with ``ua-``)."""

from __future__ import annotations

from kvmmanager.virt.xml.base import XMLObject, XMLProperty


class Device(XMLObject):
    """Base of all ``<devices>`` children."""

    alias = XMLProperty("alias/@name", doc="libvirt's alias; user-set ones need the ua- prefix")
