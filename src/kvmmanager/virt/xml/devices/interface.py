"""``<interface>``: a NIC on a libvirt network, a host bridge or a direct (macvtap) device.

Example::

    nic = Interface(type="network", source_network="default", model="virtio")
    nic.mac_address = "52:54:00:12:34:56"     # omit it and libvirt generates one
    bridged = Interface(type="bridge", source_bridge="br0", model="virtio")

User-mode networking with the passt backend and a forwarded port (host 2222 -> guest 22)::

    user = Interface(type="user", backend_type="passt", model="virtio")
    fwd = user.add(PortForward(proto="tcp"))
    fwd.add(PortRange(start=2222, to=22))
"""

from __future__ import annotations

import re

from kvmmanager.core.errors import InvalidInput
from kvmmanager.virt.xml.base import XMLChildList, XMLObject, XMLProperty
from kvmmanager.virt.xml.devices.common import Device

INTERFACE_TYPES = ("network", "bridge", "direct", "user", "ethernet")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


class _MacProperty(XMLProperty):
    def _to_text(self, value: object) -> str:
        text = super()._to_text(value)
        if not _MAC.match(text):
            raise InvalidInput(f"{self.name} must look like 52:54:00:ab:cd:ef", field=self.name)
        return text.lower()


class PortRange(XMLObject):
    """``<range start= end= to= exclude=/>``: host ports start..end go to guest port ``to``
    onwards (``to`` defaults to ``start``); ``exclude`` carves a hole out of a wider range."""

    TAG = "range"

    start = XMLProperty("@start", kind=int, minimum=1)
    end = XMLProperty("@end", kind=int, minimum=1)
    to = XMLProperty("@to", kind=int, minimum=1)
    exclude = XMLProperty("@exclude", kind=bool)


class PortForward(XMLObject):
    """``<portForward proto= address= dev=>`` of a passt interface (libvirt 9.0+)."""

    TAG = "portForward"

    proto = XMLProperty("@proto", choices=("tcp", "udp"))
    address = XMLProperty("@address", doc="host address to listen on (all when absent)")
    dev = XMLProperty("@dev", doc="host interface to listen on")
    ranges = XMLChildList(PortRange)


class Interface(Device):
    TAG = "interface"

    type = XMLProperty("@type", choices=INTERFACE_TYPES)
    mac_address = _MacProperty("mac/@address")
    source_network = XMLProperty("source/@network")
    source_bridge = XMLProperty("source/@bridge")
    source_dev = XMLProperty("source/@dev", doc="host device of a direct interface")
    source_mode = XMLProperty("source/@mode", choices=("bridge", "vepa", "private", "passthrough"))
    port_forwards = XMLChildList(PortForward)
    target_dev = XMLProperty("target/@dev", doc="host tap device (live XML)")
    model = XMLProperty("model/@type", doc="virtio, e1000e, rtl8139...")
    backend_type = XMLProperty("backend/@type", choices=("passt",), doc="user-mode backend")
    boot_order = XMLProperty("boot/@order", kind=int, minimum=1)
    link_state = XMLProperty("link/@state", choices=("up", "down"))

    @property
    def source(self) -> str | None:
        """Network name, bridge name or host device, whichever the type uses."""
        source: str | None = self.source_network or self.source_bridge or self.source_dev
        return source
