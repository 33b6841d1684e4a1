"""``<redirdev>``: USB redirection from a SPICE client into the guest.

Example::

    Redirdev(bus="usb", type="spicevmc")   # one redirected USB device; add one per slot

Each redirdev is one USB device the remote-viewer user can pass through at a time; it
needs a USB controller in the guest (qemu-xhci keeps USB 3 devices at full speed).
"""

from __future__ import annotations

from kvmmanager.virt.xml.base import XMLProperty
from kvmmanager.virt.xml.devices.common import Device


class Redirdev(Device):
    TAG = "redirdev"

    bus = XMLProperty("@bus", choices=("usb",))
    type = XMLProperty("@type", choices=("spicevmc", "tcp"), doc="spicevmc: from SPICE")
