"""``<interface>``: a NIC on a libvirt network, a host bridge or a direct (macvtap) device.

Example::

    nic = Interface(type="network", source_network="default", model="virtio")
    nic.mac_address = "52:54:00:12:34:56"     # omit it and libvirt generates one
    bridged = Interface(type="bridge", source_bridge="br0", model="virtio")
"""

from __future__ import annotations

import re

from kvmmanager.core.errors import InvalidInput
from kvmmanager.virt.xml.base import XMLProperty
from kvmmanager.virt.xml.devices.common import Device

INTERFACE_TYPES = ("network", "bridge", "direct", "user", "ethernet")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


class _MacProperty(XMLProperty):
    def _to_text(self, value: object) -> str:
        text = super()._to_text(value)
        if not _MAC.match(text):
            raise InvalidInput(f"{self.name} must look like 52:54:00:ab:cd:ef", field=self.name)
        return text.lower()


class Interface(Device):
    TAG = "interface"

    type = XMLProperty("@type", choices=INTERFACE_TYPES)
    mac_address = _MacProperty("mac/@address")
    source_network = XMLProperty("source/@network")
    source_bridge = XMLProperty("source/@bridge")
    source_dev = XMLProperty("source/@dev", doc="host device of a direct interface")
    source_mode = XMLProperty("source/@mode", choices=("bridge", "vepa", "private", "passthrough"))
    target_dev = XMLProperty("target/@dev", doc="host tap device (live XML)")
    model = XMLProperty("model/@type", doc="virtio, e1000e, rtl8139...")
    boot_order = XMLProperty("boot/@order", kind=int, minimum=1)
    link_state = XMLProperty("link/@state", choices=("up", "down"))

    @property
    def source(self) -> str | None:
        """Network name, bridge name or host device, whichever the type uses."""
        return self.source_network or self.source_bridge or self.source_dev
