"""Fixtures shared by the kvmmanager tests that use the real libvirtd."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import libvirt
import pytest
from tests.libvirtd_pools import (
    LIBVIRTD_URI,
    UNDEFINE_ALL,
    DirPool,
    drop_pool,
    libvirtd_dir_pool,
)


def drop_vm(name: str) -> None:
    """Remove a test VM over a fresh connection, whatever state it is in."""
    with contextlib.suppress(libvirt.libvirtError):
        c = libvirt.open(LIBVIRTD_URI)
        try:
            d = c.lookupByName(name)
            if d.isActive():
                d.destroy()
            if d.isPersistent():
                d.undefineFlags(UNDEFINE_ALL)
        finally:
            c.close()


@pytest.fixture
def libvirtd_cleanup() -> Any:
    """`.drop_pool(name, path)` and `.drop_vm(name)`: teardown helpers for real-libvirtd
    tests that survive a libvirtd restart by someone else."""
    return SimpleNamespace(drop_pool=drop_pool, drop_vm=drop_vm)


@pytest.fixture
def libvirtd_conn() -> Iterator[libvirt.virConnect]:
    """A connection to qemu:///system for the test, closed after it."""
    conn = libvirt.open(LIBVIRTD_URI)
    yield conn
    conn.close()


@pytest.fixture
def dir_pool() -> Iterator[Callable[..., DirPool]]:
    """`dir_pool(prefix, persistent=False)` -> DirPool(name, path): a started dir pool on
    qemu:///system named prefix + 8 hex digits, in a fresh /var/tmp directory QEMU can
    traverse; removed with its volumes and directory after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda prefix, **kw: stack.enter_context(libvirtd_dir_pool(prefix, **kw))


@pytest.fixture
def libvirtd_lab(
    libvirtd_conn: libvirt.virConnect, dir_pool: Callable[..., DirPool]
) -> Iterator[Callable[[str], dict[str, Any]]]:
    """`libvirtd_lab(prefix)` -> {"conn", "pool", "name", "dir"}: `libvirtd_conn` and a
    `dir_pool` on it. Afterwards every domain whose name starts with the pool's (with its
    checkpoints' metadata) goes, then the pool with every file in it."""
    names: list[str] = []

    def make(prefix: str) -> dict[str, Any]:
        made = dir_pool(prefix)
        names.append(made.name)
        pool = libvirtd_conn.storagePoolLookupByName(made.name)
        return {"conn": libvirtd_conn, "pool": pool, "name": made.name, "dir": made.path}

    yield make
    # Before dir_pool's teardown (a running VM keeps its disks busy), over a fresh
    # connection: libvirtd may have been restarted meanwhile.
    conn = libvirt.open(LIBVIRTD_URI)
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith(tuple(names)):
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
    finally:
        conn.close()
