"""Checksums and structural checks of backup volumes, read through libvirt streams.

A backup volume's bytes are read with `virStorageVolDownload` (the same way on a remote
host), hashed with sha256 and the first bytes checked as a qcow2 header. The checksum is
computed once right after the backup finished and recorded; `verify` computes it again
and compares, and checks that each header says what the chain needs: qcow2, the disk's
virtual size, no backing file for a full backup, the parent backup's volume as backing
file for an incremental.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from kvmmanager.services.backups.rules import qcow2_header
from kvmmanager.services.storage import transfer
from kvmmanager.services.storage.xml import active_pool, lookup_volume

# Enough for the header and a backing file name (qcow2 keeps it in the first cluster).
HEADER_BYTES = 64 * 1024


@dataclass
class Digest:
    sha256: str
    bytes: int
    header: dict[str, Any]


async def digest(hc: Any, pool: str, volume: str, cancelled: Any = None) -> Digest:
    """sha256 and qcow2 header of a volume's stored bytes (a stream through libvirt)."""
    vol = await hc.run(
        lambda: lookup_volume(active_pool(hc.conn, pool), volume), kind="read", op="volume lookup"
    )
    download = await transfer.open_download(hc, hc.conn, vol)
    h = hashlib.sha256()
    head = bytearray()
    async for chunk in download.chunks(cancelled=cancelled):
        if len(head) < HEADER_BYTES:
            head += chunk[: HEADER_BYTES - len(head)]
        await _update(h, chunk)
    return Digest(h.hexdigest(), download.done, qcow2_header(bytes(head)))


async def _update(h: Any, chunk: bytes) -> None:
    # hashlib releases the GIL on large buffers: a thread keeps the event loop free.
    import asyncio

    await asyncio.to_thread(h.update, chunk)


def header_problems(header: dict[str, Any], capacity: int, backing: str | None) -> list[str]:
    """What a backup volume's header gets wrong for its place in the chain."""
    problems = list(header["problems"])
    if problems:
        return problems
    if header.get("virtual_size") != capacity:
        problems.append(
            f"virtual size {header.get('virtual_size')} differs from the disk's {capacity}"
        )
    if header.get("backing_file") != backing:
        want = f"'{backing}'" if backing else "none"
        problems.append(f"backing file is {header.get('backing_file')!r}, expected {want}")
    return problems
