"""``<disk>``: file, block, volume (pool + volume) and network disks, disks and CD-ROMs.

Example::

    disk = Disk(type="volume", device="disk")
    disk.source_pool, disk.source_volume = "default", "vm1-root.qcow2"
    disk.driver_name, disk.driver_type = "qemu", "qcow2"
    disk.target_dev, disk.target_bus = "vda", "virtio"

    cdrom = Disk(type="file", device="cdrom")       # empty drive: no <source>
    cdrom.target_dev, cdrom.target_bus, cdrom.readonly = "sda", "sata", True
"""

from __future__ import annotations

from kvmmanager.virt.xml.base import XMLProperty, detach
from kvmmanager.virt.xml.devices.common import Device

DISK_TYPES = ("file", "block", "volume", "network")
DISK_DEVICES = ("disk", "cdrom", "floppy", "lun")
DISK_BUSES = ("virtio", "sata", "scsi", "ide", "usb", "fdc", "sd", "xen")
CACHE_MODES = ("default", "none", "writethrough", "writeback", "directsync", "unsafe")


class Disk(Device):
    TAG = "disk"

    type = XMLProperty("@type", choices=DISK_TYPES)
    device = XMLProperty("@device", choices=DISK_DEVICES)
    driver_name = XMLProperty("driver/@name")
    driver_type = XMLProperty("driver/@type", doc="image format: qcow2, raw...")
    driver_cache = XMLProperty("driver/@cache", choices=CACHE_MODES)
    driver_discard = XMLProperty("driver/@discard", choices=("unmap", "ignore"))
    source_file = XMLProperty("source/@file")
    source_dev = XMLProperty("source/@dev")
    source_pool = XMLProperty("source/@pool")
    source_volume = XMLProperty("source/@volume")
    source_protocol = XMLProperty("source/@protocol", doc="network disks: nbd, iscsi, rbd...")
    source_name = XMLProperty("source/@name")
    source_host_name = XMLProperty("source/host/@name")
    source_host_port = XMLProperty("source/host/@port", kind=int, minimum=1)
    target_dev = XMLProperty("target/@dev", doc="guest device name: vda, sda...")
    target_bus = XMLProperty("target/@bus", choices=DISK_BUSES)
    boot_order = XMLProperty("boot/@order", kind=int, minimum=1)
    readonly = XMLProperty("readonly", present=True)
    shareable = XMLProperty("shareable", present=True)
    serial = XMLProperty("serial")

    @property
    def is_cdrom(self) -> bool:
        return bool(self.device == "cdrom")

    @property
    def source_path(self) -> str | None:
        """The host path of a file or block disk (None for volumes, network, empty drives)."""
        path: str | None = self.source_file or self.source_dev
        return path

    @property
    def has_media(self) -> bool:
        """False for an empty CD-ROM/floppy drive."""
        return any((self.source_file, self.source_dev, self.source_volume, self.source_name))

    def clear_source(self) -> None:
        """Eject: drop ``<source>`` with everything in it (an empty drive has none)."""
        el = self._element()
        src = None if el is None else el.find("source")
        if src is not None:
            detach(src)
