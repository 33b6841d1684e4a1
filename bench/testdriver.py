"""A libvirt test-driver node file with N domains, for benchmarks (`test:///<file>`).

Each domain looks like a small real VM (2 vCPUs, 1 GiB, one disk, one NIC, VNC), so the
inventory and the REST payload carry what they carry in production. Every domain starts
running (the test driver's default for domains in a node file).
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

PREFIX = "kvmm-t-met-b"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def domain(i: int) -> ET.Element:
    d = ET.Element("domain", type="test")
    _sub(d, "name", f"{PREFIX}{i:05d}")
    _sub(d, "uuid", str(uuid.UUID(int=0x6B766D6D_0000_4000_8000_000000000000 + i)))
    _sub(d, "memory", "1048576", unit="KiB")
    _sub(d, "currentMemory", "1048576", unit="KiB")
    _sub(d, "vcpu", "2")
    os_el = _sub(d, "os")
    _sub(os_el, "type", "hvm", arch="x86_64")
    devices = _sub(d, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "source", file=f"/var/lib/libvirt/images/{PREFIX}{i:05d}.qcow2")
    _sub(disk, "target", dev="vda", bus="virtio")
    nic = _sub(devices, "interface", type="network")
    _sub(
        nic, "mac", address=f"52:54:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"
    )
    _sub(nic, "source", network="default")
    _sub(nic, "model", type="virtio")
    _sub(devices, "graphics", type="vnc", port="-1", autoport="yes", listen="127.0.0.1")
    return d


def write_node(path: Path, count: int, first: int = 0) -> Path:
    """`count` domains numbered from `first` (hosts of one fleet number theirs apart, so
    every name and UUID is unique across the fleet)."""
    node = ET.Element("node")
    for i in range(first, first + count):
        node.append(domain(i))
    net = _sub(node, "network")
    _sub(net, "name", "default")
    _sub(net, "bridge", name="virbr0")
    _sub(net, "forward", mode="nat")
    ip = _sub(net, "ip", address="192.168.122.1", netmask="255.255.255.0")
    dhcp = _sub(ip, "dhcp")
    _sub(dhcp, "range", start="192.168.122.2", end="192.168.122.254")
    pool = _sub(node, "pool", type="dir")
    _sub(pool, "name", "default-pool")
    target = _sub(pool, "target")
    _sub(target, "path", "/default-pool")
    ET.ElementTree(node).write(path, encoding="unicode")
    return path


def uri(path: Path) -> str:
    return f"test://{path.resolve()}"
