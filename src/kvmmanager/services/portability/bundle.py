"""VM bundles: the domain XML plus its disk volumes in one gzip-compressed tar.

Layout (disks first, so the export can stream each volume straight from libvirt into
the archive without a temporary copy; the manifest last, once every checksum is known):

    disks/vda.qcow2      the volume's bytes as stored, read through libvirt's download
    domain.xml           the persistent definition, CD-ROM media ejected
    manifest.json        {"format": "kvmm-bundle", "version": 1, "vm": ..., "disks":
                          [{"target", "file", "format", "bytes", "sha256"}], "domain_sha256"}

Import uploads every disk into one pool through libvirt (new volumes named
`<vm>-<target>.<format>`), checks each byte count and sha256 against the manifest, and
only then defines the VM; any failure deletes the volumes it had created.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import logging
import os
import re
import tarfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import libvirt

from kvmmanager.core.errors import Conflict, InvalidInput, KvmmError, Unsupported
from kvmmanager.services.portability.import_plan import (
    ImportOptions,
    ImportPlan,
    parse_domain,
    plan_import,
    refuse_shared_disks,
)
from kvmmanager.services.storage.service import StorageService
from kvmmanager.services.storage.transfer import CHUNK_SIZE, open_download
from kvmmanager.services.vms.service import VmService
from kvmmanager.virt.registry import HostRegistry
from kvmmanager.virt.xml.domain import Domain

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "kvmm-bundle"
BUNDLE_VERSION = 1
DISK_FORMATS = ("raw", "qcow2")
MAX_MANIFEST_BYTES = 1 << 20
_TARGET_RE = re.compile(r"^[a-z]{2,3}[a-z0-9]{1,4}$")
BLOCK = tarfile.BLOCKSIZE

Progress = Callable[[int, int, str], Any]
# Defines the bundle's XML once its disks are in (ExportService.import_xml, which builds on
# this module): (host, xml, options) -> the import's result.
ImportXml = Callable[[str, str, ImportOptions], Awaitable[dict[str, Any]]]


@dataclass
class DiskRef:
    target: str
    pool: str
    volume: str
    format: str


def _member_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(time.time())
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def _disks_blocking(dom: libvirt.virDomain) -> tuple[str, list[DiskRef], list[str]]:
    """The bundle's XML (media ejected) and the volumes of its disks."""
    conn = dom.connect()
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE if dom.isPersistent() else 0
    xml = Domain.from_xml(dom.XMLDesc(flags))
    disks: list[DiskRef] = []
    ejected: list[str] = []
    for d in xml.devices.disks:
        if d.device in ("cdrom", "floppy"):
            if d.has_media:
                ejected.append(d.target_dev or "?")
                d.clear_source()
            continue
        target = d.target_dev or ""
        try:
            if d.type == "volume" and d.source_pool and d.source_volume:
                vol = conn.storagePoolLookupByName(d.source_pool).storageVolLookupByName(
                    d.source_volume
                )
            elif d.source_path:
                vol = conn.storageVolLookupByPath(d.source_path)
            else:
                raise Unsupported(f"disk {target}: only volume and file disks can be exported")
        except libvirt.libvirtError:
            raise Unsupported(
                f"disk {target}: its image is not a volume of any storage pool on the host",
                field="vm",
            ) from None
        fmt = d.driver_type or "raw"
        if fmt not in DISK_FORMATS:
            raise Unsupported(f"disk {target}: format {fmt} cannot be exported", field="vm")
        disks.append(DiskRef(target, vol.storagePoolLookupByVolume().name(), vol.name(), fmt))
    return xml.to_xml(), disks, ejected


def _open_private(path: Path) -> IO[bytes]:
    """A new file only its owner reads, whatever the umask and the directory's mode: a
    bundle holds the VM's disks, and `fleet.exports_dir` may be a shared directory.
    O_EXCL: never writes through a file or link someone else placed there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a umask cannot widen it, but a 0o277 one would narrow it
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


async def export_bundle(
    vms: VmService,
    registry: HostRegistry,
    host: str,
    vm: str,
    dest: Path,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write the bundle of a shut-off VM to `dest` (a `.part` file until complete)."""

    def prepare(dom: libvirt.virDomain) -> tuple[str, list[DiskRef], list[str], str]:
        if dom.isActive():
            raise Conflict(
                f"vm '{dom.name()}' is running: shut it down to export a consistent copy",
                field="vm",
            )
        return (*_disks_blocking(dom), dom.name())

    xml, disks, ejected, name = await vms.run_on(host, vm, prepare, kind="read")
    hc = registry.get(host)
    partial = dest.with_name(dest.name + ".part")
    entries: list[dict[str, Any]] = []
    raw = await asyncio.to_thread(_open_private, partial)
    gz = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=3)
    try:
        for i, disk in enumerate(disks):
            vol = await hc.run(
                lambda d=disk: hc.conn.storagePoolLookupByName(d.pool).storageVolLookupByName(
                    d.volume
                ),
                kind="read",
                op="volume lookup",
            )
            download = await open_download(hc, hc.conn, vol)
            member = f"disks/{disk.target}.{disk.format}"
            await asyncio.to_thread(gz.write, _member_header(member, download.size))
            digest = hashlib.sha256()

            def report(done: int, total: int | None, i: int = i, t: str = disk.target) -> None:
                if progress is not None:
                    progress(done, total or 0, f"disk {i + 1}/{len(disks)} ({t})")

            async for chunk in download.chunks(progress=report):
                digest.update(chunk)
                await asyncio.to_thread(gz.write, chunk)
            if download.done != download.size:
                raise KvmmError(
                    f"disk {disk.target}: read {download.done} bytes, expected {download.size}"
                )
            await asyncio.to_thread(gz.write, _padding(download.size))
            entries.append(
                {
                    "target": disk.target,
                    "file": member,
                    "format": disk.format,
                    "bytes": download.size,
                    "sha256": digest.hexdigest(),
                    "source": f"{disk.pool}/{disk.volume}",
                }
            )
        xml_bytes = xml.encode()
        manifest = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "vm": name,
            "host": host,
            "created": int(time.time()),
            "disks": entries,
            "ejected_media": ejected,
            "domain_sha256": hashlib.sha256(xml_bytes).hexdigest(),
        }
        manifest_bytes = json.dumps(manifest, indent=2).encode()
        for member, data in (("domain.xml", xml_bytes), ("manifest.json", manifest_bytes)):
            gz.write(_member_header(member, len(data)) + data + _padding(len(data)))
        gz.write(b"\0" * (2 * BLOCK))
        await asyncio.to_thread(gz.close)
        size = raw.tell()
        await asyncio.to_thread(raw.close)
        partial.replace(dest)
    except BaseException:
        with contextlib.suppress(Exception):
            gz.close()
        raw.close()
        partial.unlink(missing_ok=True)
        raise
    return {"file": str(dest), "bytes": size, "manifest": manifest}


# ---- import -------------------------------------------------------------------------------


def _bad(message: str) -> InvalidInput:
    return InvalidInput(f"not a valid bundle: {message}", field="bundle")


def read_manifest(path: Path) -> tuple[dict[str, Any], str]:
    """The checked manifest and the domain XML of a bundle file (blocking)."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {m.name: m for m in tar.getmembers()}
            blobs = {}
            for name in ("manifest.json", "domain.xml"):
                member = members.get(name)
                if member is None or not member.isfile() or member.size > MAX_MANIFEST_BYTES:
                    raise _bad(f"{name} is missing or too large")
                fh = tar.extractfile(member)
                assert fh is not None
                blobs[name] = fh.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _bad(str(exc)) from None
    try:
        manifest = json.loads(blobs["manifest.json"])
        xml = blobs["domain.xml"].decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"unreadable manifest or XML ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise _bad("the manifest is not a kvm-manager bundle manifest")
    if manifest.get("version") != BUNDLE_VERSION:
        raise _bad(f"bundle version {manifest.get('version')!r} is not supported")
    if hashlib.sha256(blobs["domain.xml"]).hexdigest() != manifest.get("domain_sha256"):
        raise _bad("domain.xml does not match its checksum")
    disks = manifest.get("disks")
    if not isinstance(disks, list):
        raise _bad("the manifest lists no disks")
    for d in disks:
        ok = (
            isinstance(d, dict)
            and isinstance(d.get("target"), str)
            and _TARGET_RE.fullmatch(d["target"])
            and d.get("format") in DISK_FORMATS
            and d.get("file") == f"disks/{d['target']}.{d['format']}"
            and isinstance(d.get("bytes"), int)
            and d["bytes"] >= 0
            and isinstance(d.get("sha256"), str)
            and d["file"] in members
            and members[d["file"]].size == d["bytes"]
        )
        if not ok:
            raise _bad(f"disk entry {d!r} is invalid or does not match the archive")
    return manifest, xml


async def _member_chunks(tar: tarfile.TarFile, name: str, digest: Any) -> AsyncIterator[bytes]:
    fh: IO[bytes] | None = await asyncio.to_thread(tar.extractfile, name)
    assert fh is not None
    while chunk := await asyncio.to_thread(fh.read, CHUNK_SIZE):
        digest.update(chunk)
        yield chunk


async def import_bundle(
    vms: VmService,
    registry: HostRegistry,
    storage: StorageService,
    import_xml: ImportXml,
    host: str,
    path: Path,
    pool: str,
    opts: ImportOptions,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Upload the bundle's disks into `pool` on `host`, verify them, define the VM."""
    manifest, xml = await asyncio.to_thread(read_manifest, path)
    targets = {d["target"] for d in manifest["disks"]}
    missing = targets - {d.target_dev for d in parse_domain(xml).devices.disks}
    if missing:
        raise _bad(f"disks {sorted(missing)} are not in domain.xml")
    # Plan first with placeholder volumes: name clashes, networks and every refusal
    # surface before a single byte is uploaded.
    planned_volumes = {t: (pool, f"placeholder-{t}") for t in targets}
    planned = replace(opts, disk_volumes=planned_volumes)
    plan: ImportPlan = await vms.run(
        host, lambda conn: plan_import(conn, xml, planned), kind="read"
    )
    await vms.run(host, lambda conn: refuse_shared_disks(conn, plan, planned), kind="read")
    volumes = {
        d["target"]: (pool, f"{plan.name}-{d['target']}.{d['format']}") for d in manifest["disks"]
    }
    for _, vol_name in volumes.values():
        await storage.check_upload(host, pool, vol_name, size=1, create=True, format="raw")
    created: list[str] = []
    total = sum(d["bytes"] for d in manifest["disks"])
    base = 0
    try:
        tar = await asyncio.to_thread(tarfile.open, path, "r:gz")
        try:
            for d in manifest["disks"]:
                vol_name = volumes[d["target"]][1]
                digest = hashlib.sha256()

                def report(
                    done: int, _total: int | None, base: int = base, t: str = d["target"]
                ) -> None:
                    if progress is not None:
                        progress(base + done, total, f"uploading {t}")

                created.append(vol_name)
                try:
                    # The upload's own probe (services/storage/image_probe.py) holds the data to
                    # the manifest's format and refuses backing and external data files.
                    await storage.upload_volume(
                        host,
                        pool,
                        vol_name,
                        _member_chunks(tar, d["file"], digest),
                        size=d["bytes"],
                        create=True,
                        format=d["format"],
                        progress=report,
                    )
                except InvalidInput as exc:
                    if exc.field != "format":
                        raise
                    raise _bad(f"disk {d['target']}: {exc.message}") from None
                if digest.hexdigest() != d["sha256"]:
                    raise _bad(f"disk {d['target']} does not match its sha256 checksum")
                base += d["bytes"]
        finally:
            await asyncio.to_thread(tar.close)
        final = replace(opts, name=plan.name, disk_volumes=volumes)
        result = await import_xml(host, xml, final)
    except BaseException:
        await _delete_volumes(registry, host, pool, created)
        raise
    result["renamed_from"] = plan.renamed_from
    result["volumes"] = [f"{p}/{v}" for p, v in volumes.values()]
    return result


async def _delete_volumes(registry: HostRegistry, host: str, pool: str, names: list[str]) -> None:
    hc = registry.get(host)

    def drop(conn: libvirt.virConnect) -> None:
        p = conn.storagePoolLookupByName(pool)
        for name in names:
            with contextlib.suppress(libvirt.libvirtError):
                p.storageVolLookupByName(name).delete(0)

    with contextlib.suppress(Exception):
        await asyncio.shield(hc.run(lambda: drop(hc.conn), kind="lifecycle"))
