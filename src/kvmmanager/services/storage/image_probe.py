"""What an image in a volume really is, asked through libvirt only (design rule 1).

A qcow2 image can name other files that QEMU, or libvirtd converting the volume, then
opens with root's rights: a backing file (`/etc/shadow`, the manager's database) or an
external data file. An operator who may upload bytes must never get such an image into a
pool, and the manager must never clone, convert or hand out a volume whose chain leaves
the pools. Two independent readings, both through libvirt, so a remote host is probed
exactly like the local one and no local qemu-img ever opens a host's file:

- libvirt's own probe: after a pool refresh the volume XML says the format and the
  backing store libvirt found in the header;
- the first bytes of the volume read back through libvirt's download stream and parsed
  here (`qcow2_refs`): a backing file name or an external data file is seen even when
  libvirt's XML leaves it out (a pool type that does not probe, a name libvirt could not
  parse).

`upload_refusal` is the one rule shared by volume uploads (create and overwrite),
bundle imports and anything else that lets a user's bytes become a volume.
"""

from __future__ import annotations

import contextlib
import struct
import time
from dataclasses import dataclass

import libvirt

from kvmmanager.core.errors import Conflict
from kvmmanager.services.storage.xml import active_pool
from kvmmanager.virt.errors import libvirt_message
from kvmmanager.virt.xml.volume import Volume

# The header, the backing file name and the header extensions live in the first cluster;
# QEMU refuses images whose backing name or extensions go past it (cluster <= 2 MiB, but
# every image qemu-img makes keeps them in the first 64 KiB).
HEAD_BYTES = 64 * 1024
QCOW2_MAGIC = b"QFI\xfb"
# qcow2 v3 incompatible feature bit 2: the guest data lives in another file.
_EXTERNAL_DATA_BIT = 1 << 2
_EXT_DATA_FILE = 0x44415441
_EXT_END = 0
# Formats QEMU reads as plain bytes: what a `raw` or `iso` upload may hold.
PLAIN_FORMATS = frozenset({"raw", "iso"})
# libvirt refreshes a pool in a background thread once an upload stream closes, and
# refuses a refresh while another job (a volume being built) runs in the pool.
REFRESH_WAIT_SECONDS = 30.0
# A chain of the manager's own overlays deeper than this is a loop, not a chain.
MAX_CHAIN = 32


@dataclass(frozen=True, slots=True)
class Qcow2Refs:
    """What a qcow2 header makes QEMU open besides the image itself."""

    backing_file: str | None = None
    data_file: str | None = None
    external_data: bool = False
    unreadable: str | None = None  # why the header could not be read whole


@dataclass(frozen=True, slots=True)
class ImageProbe:
    format: str | None  # libvirt's probe after a refresh
    backing: str | None  # libvirt's <backingStore><path>
    qcow2_header: bool  # the bytes start with the qcow2 magic
    refs: Qcow2Refs


def qcow2_refs(head: bytes) -> Qcow2Refs:
    """The backing file and external data file a qcow2 header names (pure)."""
    if len(head) < 72 or head[:4] != QCOW2_MAGIC:
        return Qcow2Refs(unreadable="not a qcow2 header")
    version, bf_offset, bf_size = struct.unpack(">IQI", head[4:20])
    backing = None
    if bf_offset or bf_size:
        if bf_offset + bf_size > len(head):
            return Qcow2Refs(unreadable="the backing file name lies past the header")
        backing = head[bf_offset : bf_offset + bf_size].decode("utf-8", "replace") or "(empty)"
    if version < 3:
        return Qcow2Refs(backing_file=backing)
    if len(head) < 104:
        return Qcow2Refs(backing_file=backing, unreadable="short qcow2 v3 header")
    (incompatible,) = struct.unpack(">Q", head[72:80])
    (header_length,) = struct.unpack(">I", head[100:104])
    data_file = None
    offset = max(header_length, 104)
    # Header extensions: (type, length, data padded to 8 bytes) until the end marker.
    while offset + 8 <= len(head):
        ext_type, ext_len = struct.unpack(">II", head[offset : offset + 8])
        if ext_type == _EXT_END:
            break
        data = head[offset + 8 : offset + 8 + ext_len]
        if ext_type == _EXT_DATA_FILE:
            data_file = data.decode("utf-8", "replace") or "(empty)"
        offset += 8 + (ext_len + 7) // 8 * 8
    return Qcow2Refs(
        backing_file=backing,
        data_file=data_file,
        external_data=bool(incompatible & _EXTERNAL_DATA_BIT),
    )


def refresh_pool(pool: libvirt.virStoragePool) -> None:
    """Refresh now (worker thread), so a volume's format and backing store are libvirt's
    fresh probe; retry while libvirt says the pool has asynchronous jobs running."""
    deadline = time.monotonic() + REFRESH_WAIT_SECONDS
    while True:
        try:
            pool.refresh(0)
            return
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_INTERNAL_ERROR:
                raise
            if time.monotonic() > deadline:
                raise Conflict(libvirt_message(exc), field="pool") from exc
        time.sleep(0.1)


def read_head(
    conn: libvirt.virConnect, vol: libvirt.virStorageVol, limit: int = HEAD_BYTES
) -> bytes:
    """The first `limit` (HEAD_BYTES) bytes of a volume's stored bytes, through libvirt's
    download stream (worker thread; 64 KiB is one or two stream packets)."""
    try:
        _type, capacity, physical = vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)
    except libvirt.libvirtError:
        # Drivers without the flag (the test driver): capacity is the upper bound.
        _type, capacity, physical = vol.info()
    want = min(limit, int(physical or capacity))
    if want <= 0:
        return b""
    stream = conn.newStream(0)
    head = bytearray()
    try:
        vol.download(stream, 0, want, 0)
        while len(head) < want:
            data = stream.recv(want - len(head))
            if isinstance(data, int) or not data:
                break
            head += data
        stream.finish()
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise
    return bytes(head)


def probe_volume(conn: libvirt.virConnect, pool_name: str, name: str) -> ImageProbe:
    """Refresh the pool, then read libvirt's view and the header (worker thread)."""
    pool = active_pool(conn, pool_name)
    refresh_pool(pool)
    vol = pool.storageVolLookupByName(name)
    model = Volume.from_xml(vol.XMLDesc(0))
    head = read_head(conn, vol)
    is_qcow2 = head[:4] == QCOW2_MAGIC
    return ImageProbe(
        format=model.target_format,
        backing=model.backing_path,
        qcow2_header=is_qcow2,
        refs=qcow2_refs(head) if is_qcow2 else Qcow2Refs(),
    )


def upload_refusal(probe: ImageProbe, declared: str) -> str | None:
    """Why an uploaded volume must not stay (None: it may). `declared` is the format the
    uploader named: raw and iso are both plain bytes to QEMU, qcow2 must be a qcow2."""
    names = probe.backing or probe.refs.backing_file
    if names:
        # Followed by QEMU or by a libvirt clone with root's rights, it could be any
        # host file; flatten the image (qemu-img convert) before uploading it.
        return f"the uploaded image names a backing file ({names}); upload a flat image"
    if probe.refs.external_data or probe.refs.data_file:
        where = probe.refs.data_file or "an external data file"
        return f"the uploaded image keeps its data in another file ({where}); upload a flat image"
    if probe.refs.unreadable and probe.qcow2_header:
        return f"the uploaded qcow2 header cannot be checked: {probe.refs.unreadable}"
    found = "qcow2" if probe.qcow2_header else (probe.format or "raw")
    if declared == "qcow2":
        if found != "qcow2":
            return "the uploaded data is not a qcow2 image"
    elif found not in PLAIN_FORMATS:
        return (
            f"the uploaded data is a {found} image, not {declared}: upload it with format={found}"
            if found == "qcow2"
            else f"the uploaded data is a {found} image, not {declared}"
        )
    return None


def foreign_backing(conn: libvirt.virConnect, vol: libvirt.virStorageVol) -> str | None:
    """The first file in `vol`'s backing chain that is not a volume of a storage pool on
    the host (None: the chain stays inside the pools, like the manager's own overlays:
    linked clones, cloud-image disks, incremental backups). Worker thread."""
    seen: set[str] = set()
    current = vol
    for _ in range(MAX_CHAIN):
        backing: str | None = Volume.from_xml(current.XMLDesc(0)).backing_path
        if not backing:
            return None
        if backing in seen:
            return backing
        seen.add(backing)
        try:
            current = conn.storageVolLookupByPath(backing)
        except libvirt.libvirtError:
            return backing
    return f"(a backing chain deeper than {MAX_CHAIN})"


def chain_refusal(conn: libvirt.virConnect, vol: libvirt.virStorageVol) -> str | None:
    """Why a volume must not be cloned, converted or downloaded (None: it may): its chain
    leaves the pools, or its header names an external data file. Worker thread."""
    outside = foreign_backing(conn, vol)
    if outside:
        return f"it names a backing file outside every storage pool ({outside})"
    try:
        head = read_head(conn, vol)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
        # A driver that cannot stream a volume's bytes (the test driver) cannot hand
        # them out or copy them through QEMU either; its chain was checked above.
        return None
    if head[:4] == QCOW2_MAGIC:
        refs = qcow2_refs(head)
        if refs.external_data or refs.data_file:
            return f"it keeps its data in another file ({refs.data_file or 'external'})"
    return None
