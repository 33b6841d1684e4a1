"""Fixtures for migrations between the main libvirtd and a second real host.

`second_host` (session) runs a second libvirtd in its own namespaces (second_host.py);
`two_hosts` is a Manager with `local` = qemu:///system and `h2` = that host;
`pool_pair` is a dir pool at the same path on both hosts, each with its own directory
(what copy-storage needs: libvirt re-creates the disk at the same path on the target).
Everything made here is named kvmm-t-mig-... and removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest
from tests.libvirtd_pools import UNDEFINE_ALL, dir_pool_xml, qemu_dir

from kvmmanager.core.config import Settings

from .second_host import SecondHost

LOCAL_URI = "qemu:///system"
PREFIX = "kvmm-t-mig-"
MIB = 1 << 20
WAIT = 120  # generous bound for anything that should take seconds


@pytest.fixture(scope="session")
def second_host() -> Iterator[SecondHost]:
    if os.geteuid() != 0:
        pytest.skip("a second libvirtd in its own namespaces needs root")
    if shutil.which("ip") is None:
        pytest.fail("iproute2 (`ip`) is needed for the second host's veth pair")
    host = SecondHost()
    host.start()
    try:
        yield host
    finally:
        host.stop()


def unique(kind: str) -> str:
    return f"{PREFIX}{kind}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
async def two_hosts(settings: Settings, second_host: SecondHost) -> AsyncIterator[Any]:
    from kvmmanager.services.manager import Manager

    settings.libvirt.default_uri = LOCAL_URI
    m = Manager(settings)
    await m.start()
    try:
        await m.registry.get("local").wait_connected(60)
        await m.registry.add("h2", second_host.uri)
        await m.registry.get("h2").wait_connected(60)
        yield m
    finally:
        await m.stop()


@dataclass
class PoolPair:
    name: str
    path: Path  # the same path on both hosts
    target_dir: Path  # where the second host's files really are


def _drop_pool(conn: libvirt.virConnect, name: str) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        pool = conn.storagePoolLookupByName(name)
        with contextlib.suppress(libvirt.libvirtError):
            pool.refresh(0)
        for vol in pool.listAllVolumes(0):
            with contextlib.suppress(libvirt.libvirtError):
                vol.delete(0)
        pool.destroy()


@pytest.fixture
def pool_pair(second_host: SecondHost) -> Iterator[PoolPair]:
    path = qemu_dir(PREFIX)
    name = path.name
    target_dir = second_host.private_dir(path)
    local, remote = libvirt.open(LOCAL_URI), second_host.open()
    try:
        for conn in (local, remote):
            conn.storagePoolCreateXML(dir_pool_xml(name, path), 0)
        yield PoolPair(name, path, target_dir)
    finally:
        for conn in (local, remote):
            _drop_pool(conn, name)
            conn.close()
        shutil.rmtree(path, ignore_errors=True)


def drop_vm_everywhere(second_host: SecondHost, name: str) -> None:
    for opener in (lambda: libvirt.open(LOCAL_URI), second_host.open):
        with contextlib.suppress(libvirt.libvirtError):
            conn = opener()
            try:
                dom = conn.lookupByName(name)
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefineFlags(UNDEFINE_ALL)
            finally:
                conn.close()


def qcow2_with(data: bytes, dest: Path, size_mib: int) -> Path:
    """A qcow2 image whose first bytes are `data` (tests may use qemu-img to make and
    check files; the product goes through libvirt)."""
    raw = dest.with_suffix(".raw")
    raw.write_bytes(data)
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(dest)], check=True
    )
    subprocess.run(["qemu-img", "resize", "-q", str(dest), f"{size_mib}M"], check=True)
    raw.unlink()
    return dest


def upload(conn: libvirt.virConnect, vol: libvirt.virStorageVol, src: Path) -> None:
    data = src.read_bytes()
    stream = conn.newStream(0)
    vol.upload(stream, 0, len(data), 0)
    for i in range(0, len(data), MIB):
        stream.send(data[i : i + MIB])
    stream.finish()


def download(conn: libvirt.virConnect, vol: libvirt.virStorageVol, dest: Path) -> None:
    stream = conn.newStream(0)
    vol.download(stream, 0, 0, 0)
    with dest.open("wb") as f:
        while True:
            chunk = stream.recv(MIB)
            if chunk in (b"", -2) or not isinstance(chunk, bytes):
                break
            f.write(chunk)
    stream.finish()


@pytest.fixture
def vm_name(second_host: SecondHost) -> Iterator[str]:
    name = unique("vm")
    try:
        yield name
    finally:
        drop_vm_everywhere(second_host, name)


async def define_and_start(m: Any, xml: str, start: bool = True) -> str:
    hc = m.registry.get("local")

    def go() -> str:
        dom = hc.conn.defineXML(xml)
        if start:
            dom.create()
        return dom.UUIDString()

    return await hc.run(go)


async def until(m: Any, predicate: Any) -> None:
    """Wait for the inventory to reach a state: re-checked on every event of the bus."""
    with m.bus.subscribe() as sub:
        async with asyncio.timeout(WAIT):
            while not predicate():
                await sub.get()


def guest_bytes(image: Path, count: int) -> bytes:
    """The first `count` bytes the guest sees on a qcow2 image."""
    raw = image.with_suffix(".raw")
    subprocess.run(["qemu-img", "convert", "-q", "-O", "raw", str(image), str(raw)], check=True)
    try:
        with raw.open("rb") as f:
            return f.read(count)
    finally:
        raw.unlink()


def images_identical(a: Path, b: Path) -> str:
    p = subprocess.run(["qemu-img", "compare", str(a), str(b)], capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else f"differ: {p.stdout}{p.stderr}"


def in_inventory(m: Any, host: str, uuid: str) -> bool:
    return any(d.uuid == uuid for d in m.inventory.domains(host))
