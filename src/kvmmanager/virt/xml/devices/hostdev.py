"""``<hostdev mode='subsystem'>``: a host PCI or USB device given to the guest.

Example::

    gpu = Hostdev.pci(0, 1, 0, 0)                 # <hostdev type='pci' managed='yes'>
    stick = Hostdev.usb_by_id("0x1234", "0x5678")  # whichever port it is plugged into
    port = Hostdev.usb_by_address(1, 2)           # exactly bus 1 device 2
    gpu.pci_address                               # (0, 1, 0, 0)

``managed='yes'`` makes libvirt detach the PCI device from its host driver (binding it to
vfio-pci) when the guest starts and give it back when it stops.

PCI source addresses are written in hex with the ``0x`` prefix, as libvirt writes them
(libvirt parses them with base 0, so a decimal "16" would mean 16, not 0x16). USB bus and
device numbers are decimal, as lsusb and libvirt's node devices show them.
"""

from __future__ import annotations

from kvmmanager.virt.xml.base import XMLProperty
from kvmmanager.virt.xml.devices.common import Device

HOSTDEV_TYPES = ("pci", "usb", "scsi", "scsi_host", "mdev")


def _hex(value: int, width: int) -> str:
    return f"0x{value:0{width}x}"


def _int(text: str | None) -> int | None:
    return None if text is None else int(text, 0)


class Hostdev(Device):
    TAG = "hostdev"

    mode = XMLProperty("@mode", choices=("subsystem", "capabilities"))
    type = XMLProperty("@type", choices=HOSTDEV_TYPES)
    managed = XMLProperty("@managed", kind=bool)
    source_vendor_id = XMLProperty("source/vendor/@id", doc="USB vendor id, 0x1234")
    source_product_id = XMLProperty("source/product/@id", doc="USB product id, 0x5678")
    _src_domain = XMLProperty("source/address/@domain")
    _src_bus = XMLProperty("source/address/@bus")
    _src_slot = XMLProperty("source/address/@slot")
    _src_function = XMLProperty("source/address/@function")
    _src_device = XMLProperty("source/address/@device")

    @classmethod
    def pci(cls, domain: int, bus: int, slot: int, function: int) -> Hostdev:
        dev = cls(mode="subsystem", type="pci", managed=True)
        dev.pci_address = (domain, bus, slot, function)
        return dev

    @classmethod
    def usb_by_id(cls, vendor_id: str, product_id: str) -> Hostdev:
        return cls(
            mode="subsystem",
            type="usb",
            managed=True,
            source_vendor_id=vendor_id,
            source_product_id=product_id,
        )

    @classmethod
    def usb_by_address(cls, bus: int, device: int) -> Hostdev:
        dev = cls(mode="subsystem", type="usb", managed=True)
        dev.usb_address = (bus, device)
        return dev

    @property
    def pci_address(self) -> tuple[int, int, int, int] | None:
        bus, slot, function = _int(self._src_bus), _int(self._src_slot), _int(self._src_function)
        if self.type != "pci" or bus is None or slot is None or function is None:
            return None
        return (_int(self._src_domain) or 0, bus, slot, function)

    @pci_address.setter
    def pci_address(self, value: tuple[int, int, int, int]) -> None:
        domain, bus, slot, function = value
        self._src_domain = _hex(domain, 4)
        self._src_bus = _hex(bus, 2)
        self._src_slot = _hex(slot, 2)
        self._src_function = _hex(function, 1)

    @property
    def usb_address(self) -> tuple[int, int] | None:
        bus, device = _int(self._src_bus), _int(self._src_device)
        if self.type != "usb" or bus is None or device is None:
            return None
        return bus, device

    @usb_address.setter
    def usb_address(self, value: tuple[int, int]) -> None:
        self._src_bus, self._src_device = str(value[0]), str(value[1])

    @property
    def usb_id(self) -> tuple[str, str] | None:
        if self.type != "usb" or not self.source_vendor_id or not self.source_product_id:
            return None
        return self.source_vendor_id.lower(), self.source_product_id.lower()
