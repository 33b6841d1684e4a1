"""Which OS an installation ISO holds, as virt-manager tells it: the ISO's primary volume
descriptor (ISO 9660: volume, system, publisher and application ids) matched against
osinfo-db's install media, whose <iso> entries are regexes over those fields.

The descriptor is sector 16 (byte 32768, 2048 bytes): only the first 34 KiB of the
volume are read, through libvirt's download stream (design rule 1: a remote host's ISO
is read exactly like a local one), within a read call's deadline.

    found = await detect_iso_os(manager.vms, "local", "isos", "debian-11.5.0-amd64-netinst.iso")
    found.os.name         # "Debian 11", or found.os None with found.identity's volume id
"""

from __future__ import annotations

import asyncio
import functools
import re
from dataclasses import dataclass

import libvirt

from kvmmanager.core.errors import InvalidInput
from kvmmanager.services.storage.image_probe import read_head
from kvmmanager.services.storage.xml import active_pool
from kvmmanager.services.vms import osinfo
from kvmmanager.services.vms.service import VmService

SECTOR = 2048
PVD_OFFSET = 16 * SECTOR
# What is read of the volume: up to the end of the primary volume descriptor.
HEAD = PVD_OFFSET + SECTOR
# (offset, length) of each field in the descriptor, in osinfo.ISO_FIELDS' order.
FIELDS = ((40, 32), (8, 32), (318, 128), (574, 128))


@dataclass(frozen=True, slots=True)
class IsoIdentity:
    volume_id: str
    system_id: str
    publisher_id: str
    application_id: str


@dataclass(frozen=True, slots=True)
class Detected:
    identity: IsoIdentity | None  # None: no ISO 9660 descriptor (not a CD image)
    os: osinfo.OsChoice | None


def parse_pvd(head: bytes) -> IsoIdentity | None:
    """The ids of the primary volume descriptor in the first HEAD bytes of an image."""
    pvd = head[PVD_OFFSET:HEAD]
    if len(pvd) < SECTOR or pvd[0] != 1 or pvd[1:6] != b"CD001":
        return None
    # d-characters and a-characters are ASCII; anything else is shown, not trusted.
    values = [pvd[at : at + size].decode("ascii", "replace").rstrip(" \x00") for at, size in FIELDS]
    return IsoIdentity(*values)


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:  # a PCRE-only construct Python's re does not take: never matches
        return None


def _matches(pattern: str | None, value: str) -> bool:
    # As libosinfo: a field the entry leaves out matches anything; a regex is searched.
    if pattern is None:
        return True
    compiled = _compiled(pattern)
    return compiled is not None and compiled.search(value) is not None


def match_os(identity: IsoIdentity) -> osinfo.OsChoice | None:
    """The OS whose install media match `identity`; among several, one whose matching
    medium is x86_64, then the newest."""
    values = (
        identity.volume_id,
        identity.system_id,
        identity.publisher_id,
        identity.application_id,
    )
    best: tuple[bool, str] | None = None
    found = None
    for entry in osinfo.entries().values():
        for medium in entry.media:
            patterns = (
                medium.volume_id,
                medium.system_id,
                medium.publisher_id,
                medium.application_id,
            )
            if all(_matches(p, v) for p, v in zip(patterns, values, strict=True)):
                rank = (medium.arch == osinfo.ARCH, entry.choice.released)
                if best is None or rank > best:
                    best, found = rank, entry.choice
    return found


def _read_identity(conn: libvirt.virConnect, pool: str, volume: str) -> IsoIdentity | None:
    vol = active_pool(conn, pool).storageVolLookupByName(volume)
    return parse_pvd(read_head(conn, vol, HEAD))


async def detect_iso_os(vms: VmService, host: str, pool: str, volume: str) -> Detected:
    """Read ISO volume `pool`/`volume`'s descriptor on `host` and match it."""
    if not pool or not volume:
        raise InvalidInput("pick an ISO volume", field="iso")
    identity = await vms.run(host, _read_identity, pool, volume, kind="read")
    if identity is None:
        return Detected(None, None)
    if not osinfo.available():
        return Detected(identity, None)
    # Off the event loop: the first match reads the whole database (about 2 s).
    return Detected(identity, await asyncio.to_thread(match_os, identity))
