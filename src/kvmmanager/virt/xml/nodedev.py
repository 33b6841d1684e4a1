"""Read-only model of a libvirt node device (``virNodeDevice.XMLDesc()``): the host's PCI
and USB devices, as ``virsh nodedev-dumpxml`` shows them.

Example::

    dev = NodeDevice.from_xml(conn.nodeDeviceLookupByName("pci_0000_01_00_0").XMLDesc(0))
    dev.kind                       # "pci" or "usb_device" (the first capability)
    dev.pci_address                # (0, 1, 0, 0)
    dev.pci_class                  # 0x030000: display controller
    dev.vendor_id, dev.vendor_name, dev.product_id, dev.product_name
    dev.iommu_group, dev.iommu_members   # 1, [(0, 1, 0, 0), (0, 1, 0, 1)]
    dev.usb_address                # (bus, device) for a USB device
"""

from __future__ import annotations

from typing import Any

from kvmmanager.virt.xml.base import XMLChildList, XMLObject, XMLProperty

PCI = "capability[@type='pci']"
USB = "capability[@type='usb_device']"

# PCI base classes (the top byte of the 24-bit class code) the host cannot do without.
PCI_CLASS_BRIDGE = 0x06
PCI_SUBCLASS_PCI_BRIDGE = 0x0604
PCI_CLASS_NAMES = {
    0x00: "unclassified",
    0x01: "storage controller",
    0x02: "network controller",
    0x03: "display controller",
    0x04: "multimedia controller",
    0x05: "memory controller",
    0x06: "bridge",
    0x07: "communication controller",
    0x08: "system peripheral",
    0x09: "input device controller",
    0x0C: "serial bus controller",
    0x0D: "wireless controller",
    0x12: "processing accelerator",
}


def _ro(path: str, **kw: Any) -> XMLProperty:
    """A read-only XMLProperty; `kw` are XMLProperty's own keyword arguments."""
    return XMLProperty(path, readonly=True, **kw)


class PciAddress(XMLObject):
    """``<address domain= bus= slot= function=/>`` (a member of an IOMMU group)."""

    TAG = "address"

    domain = _ro("@domain", kind=int)
    bus = _ro("@bus", kind=int)
    slot = _ro("@slot", kind=int)
    function = _ro("@function", kind=int)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.domain or 0, self.bus or 0, self.slot or 0, self.function or 0)


class NodeDevice(XMLObject):
    TAG = "device"

    name = _ro("name")
    path = _ro("path", doc="sysfs path (real hosts)")
    parent = _ro("parent")
    driver_name = _ro("driver/name", doc="host driver bound now: vfio-pci, nvidia, usb...")
    _pci_class = _ro(f"{PCI}/class")
    _pci_domain = _ro(f"{PCI}/domain", kind=int)
    _pci_bus = _ro(f"{PCI}/bus", kind=int)
    _pci_slot = _ro(f"{PCI}/slot", kind=int)
    _pci_function = _ro(f"{PCI}/function", kind=int)
    _pci_product_id = _ro(f"{PCI}/product/@id")
    _pci_product = _ro(f"{PCI}/product")
    _pci_vendor_id = _ro(f"{PCI}/vendor/@id")
    _pci_vendor = _ro(f"{PCI}/vendor")
    iommu_group = _ro(f"{PCI}/iommuGroup/@number", kind=int)
    _iommu = XMLChildList(PciAddress, f"{PCI}/iommuGroup/address")
    _usb_bus = _ro(f"{USB}/bus", kind=int)
    _usb_device = _ro(f"{USB}/device", kind=int)
    _usb_product_id = _ro(f"{USB}/product/@id")
    _usb_product = _ro(f"{USB}/product")
    _usb_vendor_id = _ro(f"{USB}/vendor/@id")
    _usb_vendor = _ro(f"{USB}/vendor")
    storage_block = _ro("capability[@type='storage']/block", doc="/dev/sda: a disk the host sees")
    net_interface = _ro("capability[@type='net']/interface", doc="eth0: a NIC the host has")
    net_link_state = _ro("capability[@type='net']/link/@state", doc="up, down, unknown...")

    @property
    def kinds(self) -> list[str]:
        el = self._element()
        return [] if el is None else [c.get("type") for c in el.findall("capability")]

    @property
    def kind(self) -> str | None:
        kinds = self.kinds
        return kinds[0] if kinds else None

    @property
    def is_pci(self) -> bool:
        return "pci" in self.kinds

    @property
    def is_usb(self) -> bool:
        return "usb_device" in self.kinds

    @property
    def pci_address(self) -> tuple[int, int, int, int] | None:
        if not self.is_pci or self._pci_bus is None:
            return None
        return (self._pci_domain or 0, self._pci_bus, self._pci_slot or 0, self._pci_function or 0)

    @property
    def pci_class(self) -> int | None:
        raw = self._pci_class
        return None if raw is None else int(raw, 0)

    @property
    def pci_class_name(self) -> str | None:
        cls = self.pci_class
        return None if cls is None else PCI_CLASS_NAMES.get(cls >> 16, "other")

    @property
    def is_bridge(self) -> bool:
        cls = self.pci_class
        return cls is not None and cls >> 16 == PCI_CLASS_BRIDGE

    @property
    def iommu_members(self) -> list[tuple[int, int, int, int]]:
        return [a.as_tuple() for a in self._iommu]

    @property
    def usb_address(self) -> tuple[int, int] | None:
        if not self.is_usb or self._usb_bus is None or self._usb_device is None:
            return None
        return (self._usb_bus, self._usb_device)

    @property
    def vendor_id(self) -> str | None:
        raw = self._pci_vendor_id if self.is_pci else self._usb_vendor_id
        return raw.lower() if raw else None

    @property
    def product_id(self) -> str | None:
        raw = self._pci_product_id if self.is_pci else self._usb_product_id
        return raw.lower() if raw else None

    @property
    def vendor_name(self) -> str | None:
        return (self._pci_vendor if self.is_pci else self._usb_vendor) or None

    @property
    def product_name(self) -> str | None:
        return (self._pci_product if self.is_pci else self._usb_product) or None


def pci_text(addr: tuple[int, int, int, int]) -> str:
    """0000:01:00.0, as lspci -D writes it."""
    return f"{addr[0]:04x}:{addr[1]:02x}:{addr[2]:02x}.{addr[3]:x}"
