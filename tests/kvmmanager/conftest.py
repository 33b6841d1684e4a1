"""Fixtures shared by the kvmmanager tests that use the real libvirtd."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import libvirt
import pytest

LIBVIRTD_URI = "qemu:///system"


def drop_pool(name: str, path: Path) -> None:
    """Remove a test pool over a fresh connection (libvirtd may have restarted meanwhile)."""
    try:
        with contextlib.suppress(libvirt.libvirtError):
            c = libvirt.open(LIBVIRTD_URI)
            try:
                p = c.storagePoolLookupByName(name)
                persistent = p.isPersistent()
                if p.isActive():
                    for vol in p.listAllVolumes(0):
                        vol.delete(0)
                    p.destroy()
                if persistent:
                    p.undefine()
            finally:
                c.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)


def drop_vm(name: str) -> None:
    """Remove a test VM over a fresh connection, whatever state it is in."""
    with contextlib.suppress(libvirt.libvirtError):
        c = libvirt.open(LIBVIRTD_URI)
        try:
            d = c.lookupByName(name)
            if d.isActive():
                d.destroy()
            if d.isPersistent():
                d.undefine()
        finally:
            c.close()


@pytest.fixture
def libvirtd_cleanup() -> Any:
    """`.drop_pool(name, path)` and `.drop_vm(name)`: teardown helpers for real-libvirtd
    tests that survive a libvirtd restart by someone else."""
    return SimpleNamespace(drop_pool=drop_pool, drop_vm=drop_vm)
