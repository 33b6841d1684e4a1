"""Directory pools on the real libvirtd (qemu:///system) for tests, their XML made by the
product's own builder (services/storage/xml.py), never by string formatting.

`libvirtd_dir_pool(prefix)` is a context manager: a dir pool named prefix + 8 hex digits
in a fresh /var/tmp directory, dropped with its volumes and directory on exit.
tests/kvmmanager/conftest.py wraps it as the `dir_pool` fixture; tests elsewhere (the
reliability suite) use it directly. `drop_pool` removes any test pool, even after
libvirtd was restarted meanwhile.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt

from kvmmanager.services.storage.specs import PoolSpec
from kvmmanager.services.storage.xml import build_pool_xml
from kvmmanager.virt.xml.devices import Disk
from kvmmanager.virt.xml.domain import Domain

LIBVIRTD_URI = "qemu:///system"
# A test VM goes whatever it carries: a backup's checkpoints, snapshots, NVRAM or a managed
# save each make a plain undefine() fail, and the VM was then left behind on the shared host.
UNDEFINE_ALL = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
)


@dataclass(frozen=True, slots=True)
class DirPool:
    name: str
    path: Path


def qemu_dir(prefix: str) -> Path:
    """A fresh directory in /var/tmp that QEMU (another user) may traverse: it opens the
    disks of a running VM itself."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    path.chmod(0o755)
    return path


def dir_pool_xml(name: str, path: str | Path) -> str:
    return build_pool_xml(PoolSpec(name=name, type="dir", target=str(path)))


def qcow2_domain_xml(name: str, disk_path: str) -> str:
    """A 64 MiB TCG domain whose only device is a virtio qcow2 disk (block-job labs)."""
    dom = Domain(type="qemu", name=name, memory=64 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch, dom.os.machine = "hvm", "x86_64", "pc"
    disk = Disk(type="file", device="disk", driver_name="qemu", driver_type="qcow2")
    disk.source_file, disk.target_dev, disk.target_bus = disk_path, "vda", "virtio"
    dom.devices.add(disk)
    return dom.to_xml()


def drop_pool(name: str, path: Path | None = None, uri: str = LIBVIRTD_URI) -> None:
    """Remove a test pool (its volumes, and `path` if given) over a fresh connection:
    libvirtd may have restarted meanwhile."""
    try:
        with contextlib.suppress(libvirt.libvirtError):
            c = libvirt.open(uri)
            try:
                p = c.storagePoolLookupByName(name)
                persistent = p.isPersistent()
                if p.isActive():
                    # Files written into the pool behind libvirt's back (a backup's
                    # target) become volumes it can delete.
                    with contextlib.suppress(libvirt.libvirtError):
                        p.refresh(0)
                    for vol in p.listAllVolumes(0):
                        vol.delete(0)
                    p.destroy()
                if persistent:
                    p.undefine()
            finally:
                c.close()
    finally:
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def libvirtd_dir_pool(prefix: str, *, persistent: bool = False) -> Iterator[DirPool]:
    """A started dir pool named `prefix` + 8 hex digits in a `qemu_dir`; transient unless
    `persistent` (a pool that must come back after a libvirtd restart)."""
    made = DirPool(f"{prefix}{uuid.uuid4().hex[:8]}", qemu_dir(prefix))
    try:
        conn = libvirt.open(LIBVIRTD_URI)
        try:
            xml = dir_pool_xml(made.name, made.path)
            if persistent:
                conn.storagePoolDefineXML(xml, 0).create(0)
            else:
                conn.storagePoolCreateXML(xml, 0)
        finally:
            conn.close()
        yield made
    finally:
        drop_pool(made.name, made.path)
