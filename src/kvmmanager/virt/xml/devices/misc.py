"""The simple devices: controllers, video, input, TPM, RNG and the memory balloon.

Example::

    Controller(type="virtio-serial", index=0)
    Controller(type="usb", index=0, model="qemu-xhci")
    Video(model_type="virtio")
    Input(type="tablet", bus="usb")
    Tpm(model="tpm-crb", backend_type="emulator", backend_version="2.0")
    Rng(model="virtio", backend_model="random", backend_path="/dev/urandom")
    MemBalloon(model="virtio")
"""

from __future__ import annotations

from kvmmanager.virt.xml.base import XMLProperty
from kvmmanager.virt.xml.devices.common import Device

CONTROLLER_TYPES = (
    "usb",
    "virtio-serial",
    "pci",
    "scsi",
    "sata",
    "ide",
    "fdc",
    "ccid",
    "xenbus",
    "isa",
)


class Controller(Device):
    TAG = "controller"

    type = XMLProperty("@type", choices=CONTROLLER_TYPES)
    index = XMLProperty("@index", kind=int, minimum=0)
    model = XMLProperty("@model", doc="qemu-xhci, pcie-root, pcie-root-port, virtio-scsi...")
    ports = XMLProperty("@ports", kind=int, minimum=1, doc="virtio-serial ports")


class Video(Device):
    TAG = "video"

    model_type = XMLProperty(
        "model/@type", choices=("vga", "cirrus", "vmvga", "qxl", "virtio", "bochs", "ramfb", "none")
    )
    model_heads = XMLProperty("model/@heads", kind=int, minimum=1)
    model_vram = XMLProperty("model/@vram", kind=int, minimum=0, doc="KiB")
    model_primary = XMLProperty("model/@primary", kind=bool)


class Input(Device):
    TAG = "input"

    type = XMLProperty("@type", choices=("tablet", "mouse", "keyboard", "passthrough", "evdev"))
    bus = XMLProperty("@bus", choices=("usb", "ps2", "virtio", "xen"))


class Tpm(Device):
    TAG = "tpm"

    model = XMLProperty("@model", choices=("tpm-tis", "tpm-crb", "tpm-spapr", "spapr-tpm-proxy"))
    backend_type = XMLProperty("backend/@type", choices=("emulator", "passthrough", "external"))
    backend_version = XMLProperty("backend/@version", choices=("1.2", "2.0"))


class Rng(Device):
    TAG = "rng"

    model = XMLProperty(
        "@model", choices=("virtio", "virtio-transitional", "virtio-non-transitional")
    )
    backend_model = XMLProperty("backend/@model", choices=("random", "egd", "builtin"))
    backend_path = XMLProperty("backend", doc="/dev/urandom for the random backend")
    rate_bytes = XMLProperty("rate/@bytes", kind=int, minimum=1)
    rate_period = XMLProperty("rate/@period", kind=int, minimum=1)


class MemBalloon(Device):
    TAG = "memballoon"

    model = XMLProperty(
        "@model",
        choices=("virtio", "xen", "none", "virtio-transitional", "virtio-non-transitional"),
    )
    stats_period = XMLProperty("stats/@period", kind=int, minimum=0, doc="seconds")
