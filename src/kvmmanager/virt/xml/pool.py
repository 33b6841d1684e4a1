"""``<pool>``: storage pools (dir, logical, netfs, fs...).

Example::

    from kvmmanager.virt.xml.pool import Pool

    Pool(type="dir", name="images", target_path="/srv/images", target_mode="0711")
    Pool(type="netfs", name="nfs", source_host_name="nas", source_dir="/export/vm",
         source_format="nfs", target_path="/mnt/nfs")
    Pool(type="logical", name="vg0", source_name="vg0", source_devices=["/dev/sdb"],
         source_format="lvm2", target_path="/dev/vg0")

``capacity``/``allocation``/``available`` are bytes, reported by libvirt (read-only).
"""

from __future__ import annotations

from kvmmanager.virt.xml.base import XMLObject, XMLProperty, XMLSizeProperty, XMLValueList

POOL_TYPES = (
    "dir", "fs", "netfs", "logical", "disk", "iscsi", "iscsi-direct", "scsi", "mpath", "rbd",
    "gluster", "zfs", "vstorage",
)  # fmt: skip


class Pool(XMLObject):
    TAG = "pool"

    type = XMLProperty("@type", choices=POOL_TYPES)
    name = XMLProperty("name")
    uuid = XMLProperty("uuid")
    capacity = XMLSizeProperty("capacity", unit="bytes", readonly=True)
    allocation = XMLSizeProperty("allocation", unit="bytes", readonly=True)
    available = XMLSizeProperty("available", unit="bytes", readonly=True)
    source_host_name = XMLProperty("source/host/@name")
    source_host_port = XMLProperty("source/host/@port", kind=int, minimum=1)
    source_dir = XMLProperty("source/dir/@path", doc="netfs: exported directory")
    source_devices = XMLValueList("source/device/@path", doc="logical/fs/disk: block devices")
    source_name = XMLProperty("source/name", doc="logical: volume group name")
    source_format = XMLProperty("source/format/@type", doc="nfs, lvm2, ext4, auto...")
    target_path = XMLProperty("target/path")
    target_mode = XMLProperty("target/permissions/mode", doc="octal, e.g. 0755")
    target_owner = XMLProperty("target/permissions/owner", kind=int, minimum=-1)
    target_group = XMLProperty("target/permissions/group", kind=int, minimum=-1)

    @property
    def source_device(self) -> str | None:
        devices = self.source_devices
        return devices[0] if devices else None

    @source_device.setter
    def source_device(self, path: str | None) -> None:
        self.source_devices = [path] if path else []
