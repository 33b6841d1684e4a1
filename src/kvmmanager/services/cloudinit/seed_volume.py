"""Telling a cloud-init NoCloud seed volume (an ISO 9660 image labelled cidata) from any
other volume, through libvirt's volume download: read by the seed builder (cloudinit.py)
and by the VM delete (vms/delete.py), which removes a VM's own seed with it."""

from __future__ import annotations

import contextlib
import logging

import libvirt

log = logging.getLogger(__name__)

SEED_LABEL = "cidata"

# ISO 9660: the primary volume descriptor is sector 16; its volume id is bytes 40-72.
PVD_OFFSET, PVD_SIZE = 16 * 2048, 2048
MAX_SEED_BYTES = 64 * 1024**2


def download_range(
    conn: libvirt.virConnect, vol: libvirt.virStorageVol, offset: int, length: int
) -> bytes:
    stream = conn.newStream(0)
    chunks: list[bytes] = []
    try:
        vol.download(stream, offset, length, 0)
        while True:
            data = stream.recv(256 * 1024)
            if not data:
                break
            chunks.append(data)
        stream.finish()
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise
    return b"".join(chunks)


def is_seed(conn: libvirt.virConnect, path: str) -> bool:
    """True when the volume at `path` is a NoCloud seed (ISO 9660 labelled cidata): only
    its volume descriptor is read."""
    return seed_volume(conn, path) is not None


def seed_volume(conn: libvirt.virConnect, path: str) -> libvirt.virStorageVol | None:
    try:
        vol = conn.storageVolLookupByPath(path)
    except libvirt.libvirtError:
        return None  # not a pool volume: never ours
    size = int(vol.info()[1])
    if size > MAX_SEED_BYTES or size < PVD_OFFSET + PVD_SIZE:
        return None
    try:
        pvd = download_range(conn, vol, PVD_OFFSET, PVD_SIZE)
    except libvirt.libvirtError as exc:
        # A driver without volume downloads (libvirt's test driver): cannot be a seed
        # we can read.
        log.warning("cannot read %s to look for a cloud-init seed: %s", path, exc)
        return None
    if pvd[1:6] != b"CD001" or pvd[40:72].decode(errors="replace").strip() != SEED_LABEL:
        return None
    return vol


def read_seed(conn: libvirt.virConnect, path: str) -> bytes | None:
    """The bytes of the volume at `path` when it is a NoCloud seed (ISO labelled
    cidata, small), else None: only its volume descriptor is read otherwise."""
    vol = seed_volume(conn, path)
    return None if vol is None else download_range(conn, vol, 0, 0)
