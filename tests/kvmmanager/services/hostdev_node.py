"""A libvirt test-driver node file with PCI and USB node devices (test:///default has
none): a GPU whose IOMMU group also holds its audio function, a NIC alone in its group,
a PCI bridge, a USB stick and a USB root hub. Each `test:///<file>` connection is a private
instance, so the state a test makes dies with the manager's connection."""

from __future__ import annotations

from pathlib import Path

from lxml import etree

GPU, GPU_AUDIO, NIC, BRIDGE = (
    "pci_0000_01_00_0",
    "pci_0000_01_00_1",
    "pci_0000_02_00_0",
    "pci_0000_00_1c_0",
)
STICK, ROOT_HUB = "usb_1_2", "usb_1_1"


def _sub(parent: etree._Element, tag: str, text: object = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = str(text)
    return el


def _device(root: etree._Element, name: str, kind: str) -> etree._Element:
    """A `<device>` child of the computer; returns its `<capability type=kind>`."""
    dev = _sub(root, "device")
    _sub(dev, "name", name)
    _sub(dev, "parent", "computer")
    return _sub(dev, "capability", type=kind)


def _ids(cap: etree._Element, pid: str, pname: str, vid: str, vname: str) -> None:
    _sub(cap, "product", pname, id=pid)
    _sub(cap, "vendor", vname, id=vid)


def _pci(
    root: etree._Element,
    bus: int,
    slot: int,
    fn: int,
    cls: int,
    ids: tuple[str, str, str, str],
    group: int,
    members: list[tuple[int, int, int]],
) -> None:
    cap = _device(root, f"pci_0000_{bus:02x}_{slot:02x}_{fn:x}", "pci")
    _sub(cap, "class", f"0x{cls:06x}")
    for tag, value in (("domain", 0), ("bus", bus), ("slot", slot), ("function", fn)):
        _sub(cap, tag, value)
    _ids(cap, *ids)
    iommu = _sub(cap, "iommuGroup", number=str(group))
    for b, s, f in members:
        _sub(
            iommu,
            "address",
            domain="0x0000",
            bus=f"0x{b:02x}",
            slot=f"0x{s:02x}",
            function=f"0x{f:x}",
        )


def _usb(root: etree._Element, bus: int, dev: int, ids: tuple[str, str, str, str]) -> None:
    cap = _device(root, f"usb_{bus}_{dev}", "usb_device")
    _sub(cap, "bus", bus)
    _sub(cap, "device", dev)
    _ids(cap, *ids)


def write(path: Path) -> str:
    """Write the node file; return its test:// URI."""
    root = etree.Element("node")
    nvidia = ("0x10de", "NVIDIA Corporation")
    intel = ("0x8086", "Intel Corporation")
    gpu_group = [(1, 0, 0), (1, 0, 1)]
    _pci(root, 1, 0, 0, 0x030000, ("0x1b80", "GP104", *nvidia), 1, gpu_group)
    _pci(root, 1, 0, 1, 0x040300, ("0x10f0", "GP104 HD Audio", *nvidia), 1, gpu_group)
    _pci(root, 2, 0, 0, 0x020000, ("0x1533", "I210", *intel), 2, [(2, 0, 0)])
    _pci(root, 0, 0x1C, 0, 0x060400, ("0xa110", "PCIe Root Port", *intel), 3, [(0, 0x1C, 0)])
    _usb(root, 1, 1, ("0x0002", "2.0 root hub", "0x1d6b", "Linux Foundation"))
    _usb(root, 1, 2, ("0x5678", "Flash Drive", "0x1234", "ACME"))
    etree.ElementTree(root).write(str(path), pretty_print=True)
    return f"test://{path.resolve()}"
