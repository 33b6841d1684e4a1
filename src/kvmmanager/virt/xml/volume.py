"""``<volume>``: storage volumes, sizes in bytes whatever unit the XML used.

Example::

    from kvmmanager.virt.xml.volume import Volume

    vol = Volume(name="web1.qcow2", capacity=20 * 1024**3, target_format="qcow2")
    vol.allocation = 0                                  # thin
    overlay = Volume(name="web1-overlay.qcow2", capacity=20 * 1024**3, target_format="qcow2",
                     backing_path="/var/lib/libvirt/images/base.qcow2", backing_format="qcow2")
    pool.createXML(vol.to_xml(), 0)
"""

from __future__ import annotations

from kvmmanager.virt.xml.base import XMLObject, XMLProperty, XMLSizeProperty

VOLUME_FORMATS = (
    "raw", "qcow2", "iso", "qcow", "qed", "vmdk", "vpc", "vdi", "vhd", "vhdx", "dmg", "bochs",
    "cloop", "cow", "dir", "fat", "ploop", "none",
)  # fmt: skip


class Volume(XMLObject):
    TAG = "volume"

    type = XMLProperty("@type", choices=("file", "block", "dir", "network", "netdir"))
    name = XMLProperty("name")
    key = XMLProperty("key", doc="libvirt's unique key (usually the path)")
    capacity = XMLSizeProperty("capacity", unit="bytes", doc="virtual size, bytes")
    allocation = XMLSizeProperty("allocation", unit="bytes", doc="bytes used on the host")
    physical = XMLSizeProperty("physical", unit="bytes", readonly=True)
    target_path = XMLProperty("target/path", doc="reported by libvirt")
    target_format = XMLProperty("target/format/@type", doc="qcow2, raw, iso...")
    target_mode = XMLProperty("target/permissions/mode")
    target_owner = XMLProperty("target/permissions/owner", kind=int, minimum=-1)
    target_group = XMLProperty("target/permissions/group", kind=int, minimum=-1)
    # qcow2 version: "1.1" (v3) is needed for persistent dirty bitmaps (checkpoints).
    compat = XMLProperty("target/compat")
    backing_path = XMLProperty("backingStore/path")
    backing_format = XMLProperty("backingStore/format/@type")
