"""Device models and the ``<devices>`` container of a domain.

Example::

    from kvmmanager.virt.xml.devices import Devices, Disk, Channel

    devs = domain.devices
    devs.add(Disk(type="file", device="cdrom", target_dev="sda", target_bus="sata"))
    agent = devs.channel("org.kvmmanager.agent.0")      # None when absent
    disk = devs.disk_by_target("vda")
    nic = devs.by_alias("net0")
    devs.remove(disk)

    dev = parse_device("<disk type='file' device='disk'>...</disk>")   # for attachDevice XML
"""

from __future__ import annotations

from kvmmanager.core.errors import InvalidInput
from kvmmanager.virt.xml.base import XMLChild, XMLChildList, XMLObject, XMLProperty, parse_xml
from kvmmanager.virt.xml.devices.chardev import (
    KVMM_AGENT_CHANNEL,
    QEMU_GA_CHANNEL,
    Channel,
    Console,
    Serial,
)
from kvmmanager.virt.xml.devices.common import Device
from kvmmanager.virt.xml.devices.disk import Disk
from kvmmanager.virt.xml.devices.graphics import Graphics
from kvmmanager.virt.xml.devices.hostdev import Hostdev
from kvmmanager.virt.xml.devices.interface import Interface
from kvmmanager.virt.xml.devices.misc import Controller, Input, MemBalloon, Rng, Tpm, Video
from kvmmanager.virt.xml.devices.redirdev import Redirdev

__all__ = [
    "DEVICE_CLASSES",
    "KVMM_AGENT_CHANNEL",
    "QEMU_GA_CHANNEL",
    "Channel",
    "Console",
    "Controller",
    "Device",
    "Devices",
    "Disk",
    "Graphics",
    "Hostdev",
    "Input",
    "Interface",
    "MemBalloon",
    "Redirdev",
    "Rng",
    "Serial",
    "Tpm",
    "Video",
    "parse_device",
]

DEVICE_CLASSES: dict[str, type[Device]] = {
    cls.TAG: cls
    for cls in (
        Disk,
        Controller,
        Interface,
        Serial,
        Console,
        Channel,
        Input,
        Tpm,
        Graphics,
        Video,
        Hostdev,
        Redirdev,
        MemBalloon,
        Rng,
    )
}


class Devices(XMLObject):
    """``<devices>``; declaration order below is the order libvirt itself writes."""

    TAG = "devices"

    emulator = XMLProperty("emulator", doc="path of the QEMU binary")
    disks = XMLChildList(Disk)
    controllers = XMLChildList(Controller)
    interfaces = XMLChildList(Interface)
    serials = XMLChildList(Serial)
    consoles = XMLChildList(Console)
    channels = XMLChildList(Channel)
    inputs = XMLChildList(Input)
    tpms = XMLChildList(Tpm)
    graphics = XMLChildList(Graphics)
    videos = XMLChildList(Video)
    hostdevs = XMLChildList(Hostdev)
    redirdevs = XMLChildList(Redirdev)
    memballoon = XMLChild(MemBalloon)
    rngs = XMLChildList(Rng)

    def all(self) -> list[Device]:
        """Every modelled device in document order (unknown device kinds are skipped)."""
        el = self._element()
        if el is None:
            return []
        return [DEVICE_CLASSES[c.tag](c, _parent=self) for c in el if c.tag in DEVICE_CLASSES]

    def by_alias(self, alias: str) -> Device | None:
        return next((d for d in self.all() if d.alias == alias), None)

    def disk_by_target(self, dev: str) -> Disk | None:
        return next((d for d in self.disks if d.target_dev == dev), None)

    def interface_by_mac(self, mac: str) -> Interface | None:
        mac = mac.lower()
        return next((n for n in self.interfaces if (n.mac_address or "").lower() == mac), None)

    def channels_named(self, name: str) -> list[Channel]:
        return [c for c in self.channels if c.target_name == name]

    def channel(self, name: str) -> Channel | None:
        return next(iter(self.channels_named(name)), None)

    def cdroms(self) -> list[Disk]:
        return [d for d in self.disks if d.device == "cdrom"]


def parse_device(text: str | bytes) -> Device:
    """Parse one device element (as given to ``attachDevice``/``detachDevice``)."""
    root = parse_xml(text, what="device")
    tag = root.tag  # a str for every parsed element (lxml's stubs also allow bytes and QName)
    cls = DEVICE_CLASSES.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise InvalidInput(f"unsupported device element <{tag!s}>", field="device")
    return cls(root)
