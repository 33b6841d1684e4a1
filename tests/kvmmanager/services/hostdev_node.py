"""A libvirt test-driver node file with PCI and USB node devices (test:///default has
none): a GPU whose IOMMU group also holds its audio function, a NIC alone in its group,
a PCI bridge, a USB stick and a USB root hub. Each `test:///<file>` connection is a private
instance, so the state a test makes dies with the manager's connection."""

from __future__ import annotations

from pathlib import Path

_PCI = """
  <device>
    <name>pci_0000_{bus:02x}_{slot:02x}_{fn:x}</name>
    <parent>computer</parent>
    <capability type='pci'>
      <class>0x{cls:06x}</class>
      <domain>0</domain><bus>{bus}</bus><slot>{slot}</slot><function>{fn}</function>
      <product id='{pid}'>{pname}</product>
      <vendor id='{vid}'>{vname}</vendor>
      <iommuGroup number='{group}'>{members}</iommuGroup>
    </capability>
  </device>"""
_USB = """
  <device>
    <name>usb_{bus}_{dev}</name>
    <parent>computer</parent>
    <capability type='usb_device'>
      <bus>{bus}</bus><device>{dev}</device>
      <product id='{pid}'>{pname}</product>
      <vendor id='{vid}'>{vname}</vendor>
    </capability>
  </device>"""

GPU, GPU_AUDIO, NIC, BRIDGE = (
    "pci_0000_01_00_0",
    "pci_0000_01_00_1",
    "pci_0000_02_00_0",
    "pci_0000_00_1c_0",
)
STICK, ROOT_HUB = "usb_1_2", "usb_1_1"


def _addr(bus: int, slot: int, fn: int) -> str:
    return f"<address domain='0x0000' bus='0x{bus:02x}' slot='0x{slot:02x}' function='0x{fn:x}'/>"


def write(path: Path) -> str:
    """Write the node file; return its test:// URI."""
    gpu_group = _addr(1, 0, 0) + _addr(1, 0, 1)
    pci = [
        dict(bus=1, slot=0, fn=0, cls=0x030000, pid="0x1b80", pname="GP104", vid="0x10de",
             vname="NVIDIA Corporation", group=1, members=gpu_group),
        dict(bus=1, slot=0, fn=1, cls=0x040300, pid="0x10f0", pname="GP104 HD Audio",
             vid="0x10de", vname="NVIDIA Corporation", group=1, members=gpu_group),
        dict(bus=2, slot=0, fn=0, cls=0x020000, pid="0x1533", pname="I210", vid="0x8086",
             vname="Intel Corporation", group=2, members=_addr(2, 0, 0)),
        dict(bus=0, slot=0x1C, fn=0, cls=0x060400, pid="0xa110", pname="PCIe Root Port",
             vid="0x8086", vname="Intel Corporation", group=3, members=_addr(0, 0x1C, 0)),
    ]  # fmt: skip
    usb = [
        dict(bus=1, dev=1, pid="0x0002", pname="2.0 root hub", vid="0x1d6b",
             vname="Linux Foundation"),
        dict(bus=1, dev=2, pid="0x5678", pname="Flash Drive", vid="0x1234", vname="ACME"),
    ]  # fmt: skip
    body = "".join(_PCI.format(**d) for d in pci) + "".join(_USB.format(**d) for d in usb)
    path.write_text(f"<node>{body}\n</node>\n")
    return f"test://{path.resolve()}"
