"""Character devices: ``<channel>`` (virtio-serial ports), ``<serial>`` and ``<console>``.

Example (the two agent channels every VM gets)::

    Channel(type="unix", target_type="virtio", target_name="org.kvmmanager.agent.0")
    Channel(type="unix", target_type="virtio", target_name="org.qemu.guest_agent.0")
    Serial(type="pty", target_type="isa-serial", target_port=0, target_model="isa-serial")
    Console(type="pty", target_type="serial", target_port=0)

``channel.target_state`` is what libvirt reports in live XML: ``"connected"`` once a guest
process opened the port, ``"disconnected"`` otherwise, None when unknown.
"""

from __future__ import annotations

from kvmmanager.virt.xml.base import XMLProperty
from kvmmanager.virt.xml.devices.common import Device

CHAR_TYPES = ("pty", "unix", "file", "null", "spicevmc", "tcp", "udp", "stdio", "vc")

KVMM_AGENT_CHANNEL = "org.kvmmanager.agent.0"
QEMU_GA_CHANNEL = "org.qemu.guest_agent.0"


class _CharDevice(Device):
    type = XMLProperty("@type", choices=CHAR_TYPES)
    source_mode = XMLProperty("source/@mode", choices=("bind", "connect"))
    source_path = XMLProperty("source/@path", doc="unix socket / pty path on the host")


class Channel(_CharDevice):
    TAG = "channel"

    target_type = XMLProperty("target/@type", choices=("virtio", "guestfwd", "xen"))
    target_name = XMLProperty("target/@name", doc="virtio-serial port name seen by the guest")
    target_state = XMLProperty(
        "target/@state", readonly=True, doc="connected/disconnected (live XML only)"
    )

    @property
    def connected(self) -> bool | None:
        state = self.target_state
        return None if state is None else state == "connected"


class Serial(_CharDevice):
    TAG = "serial"

    target_type = XMLProperty("target/@type", doc="isa-serial, pci-serial, usb-serial...")
    target_port = XMLProperty("target/@port", kind=int, minimum=0)
    target_model = XMLProperty("target/model/@name", doc="isa-serial, 16550a, pci-serial...")


class Console(_CharDevice):
    TAG = "console"

    target_type = XMLProperty("target/@type", choices=("serial", "virtio", "xen", "sclp"))
    target_port = XMLProperty("target/@port", kind=int, minimum=0)
