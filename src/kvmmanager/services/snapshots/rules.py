"""What a snapshot request may ask for, decided from the domain XML before libvirt is asked.

libvirt refuses most impossible requests itself, but with messages about QEMU internals
("internal snapshot of a running VM must include the memory state"); these rules refuse
them first, saying what to do instead, and pick the kind when the caller left it open.

Rules (libvirt 9.x with QEMU):
- internal snapshots live inside qcow2 images: every snapshotted disk must be qcow2, and
  UEFI pflash firmware (its NVRAM is a separate raw file) rules them out;
- an internal snapshot of a running VM always carries the memory state;
- external snapshots here are disk-only (a qcow2 overlay per file disk, made by libvirt);
  libvirt before 9.9 cannot revert them, and cannot delete an external snapshot whose
  parent is internal, so one VM's snapshots are all of one kind.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import libvirt

from kvmmanager.core.errors import Conflict, InvalidInput, Unsupported
from kvmmanager.virt.xml.devices import Disk
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.snapshot import DomainSnapshot, SnapshotDisk

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
KINDS = ("internal", "external")
# libvirt reverts external snapshots from this version on (major*1e6 + minor*1e3 + micro).
EXTERNAL_REVERT_VERSION = 9_009_000
DESCRIPTION_MAX = 1000


def validate_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise InvalidInput(
            "snapshot name must be 1-64 characters: letters, digits, '.', '_', '+', '-', "
            "starting with a letter or digit",
            field="name",
        )
    return name


def validate_description(text: str | None) -> str | None:
    if text is not None and len(text) > DESCRIPTION_MAX:
        raise InvalidInput(
            f"description must be at most {DESCRIPTION_MAX} characters", field="description"
        )
    return text


@dataclass
class SnapshotPlan:
    kind: str  # internal | external
    memory: bool
    disks: dict[str, str] = field(default_factory=dict)  # target dev -> internal/external/no
    running: bool = False
    # target dev -> path of its new overlay without the ".<snapshot name>" suffix
    overlays: dict[str, str] = field(default_factory=dict)

    @property
    def disk_only(self) -> bool:
        return not self.memory

    def to_xml(self, name: str, description: str | None) -> str:
        snap = DomainSnapshot(name=name)
        if description:
            snap.description = description
        snap.memory_snapshot = "internal" if self.memory else "no"
        for dev, how in self.disks.items():
            d = SnapshotDisk(name=dev, snapshot=how)
            if how == "external":
                d.type, d.driver_type = "file", "qcow2"
                d.source_file = f"{self.overlays[dev]}.{name}"
            snap.add(d)
        return snap.to_xml()

    def flags(self) -> int:
        flags: int = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
        if self.kind == "external":
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        return flags


def disk_format(disk: Disk) -> str:
    # libvirt treats a disk without a format as raw (it never probes, for safety).
    return disk.driver_type or "raw"


def snapshot_disks(xml: Domain) -> tuple[list[Disk], list[Disk]]:
    """(disks whose data a snapshot covers, drives left out: CD-ROMs, floppies, empty,
    read-only and shared disks)."""
    covered, skipped = [], []
    for d in xml.devices.disks:
        if d.device in (None, "disk", "lun") and d.has_media and not d.readonly and not d.shareable:
            covered.append(d)
        else:
            skipped.append(d)
    return covered, skipped


def _why_not_internal(xml: Domain, covered: list[Disk]) -> str | None:
    if xml.os.is_uefi:
        return (
            "the VM boots UEFI from pflash firmware, whose NVRAM is a separate raw file "
            "QEMU cannot snapshot internally"
        )
    for d in covered:
        if disk_format(d) != "qcow2":
            return (
                f"disk {d.target_dev} is {disk_format(d)}: internal snapshots are stored "
                "inside qcow2 images only"
            )
    return None


def plan(
    xml: Domain,
    running: bool,
    existing: list[DomainSnapshot],
    kind: str | None = None,
    memory: bool | None = None,
) -> SnapshotPlan:
    """Decide kind, memory and per-disk handling, or raise saying why not."""
    if kind is not None and kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}", field="kind")
    covered, skipped = snapshot_disks(xml)
    if not covered:
        raise Unsupported(
            f"vm '{xml.name}' has no writable disk: there is nothing to snapshot", field="vm"
        )
    has_external = any(s.is_external for s in existing)
    has_internal = any(not s.is_external for s in existing)
    why_not_internal = _why_not_internal(xml, covered)
    if kind is None:
        kind = "external" if has_external or why_not_internal else "internal"

    if kind == "internal":
        if why_not_internal:
            raise Unsupported(
                f"no internal snapshot of vm '{xml.name}': {why_not_internal}; "
                "use kind 'external' (disk-only)",
                field="kind",
            )
        if has_external:
            raise Conflict(
                f"vm '{xml.name}' has external snapshots: libvirt cannot mix internal ones "
                "with them; delete those first or use kind 'external'",
                field="kind",
            )
        if memory is None:
            memory = running
        if running and not memory:
            raise Unsupported(
                "an internal snapshot of a running VM always includes its memory state; "
                "use kind 'external' for a disk-only snapshot",
                field="memory",
            )
    else:
        if has_internal:
            raise Conflict(
                f"vm '{xml.name}' has internal snapshots: libvirt cannot delete an external "
                "snapshot whose parent is internal; delete those first or use kind 'internal'",
                field="kind",
            )
        if memory:
            raise Unsupported(
                "external snapshots are disk-only here: libvirt before 9.9 cannot revert an "
                "external memory snapshot; use kind 'internal' to keep the memory state",
                field="memory",
            )
        memory = False
        for d in covered:
            if d.type != "file":
                raise Unsupported(
                    f"disk {d.target_dev} is a {d.type} disk: external snapshots need a "
                    "file-backed disk for the new overlay",
                    field="kind",
                )
    if memory and not running:
        raise InvalidInput(
            f"vm '{xml.name}' is not running: there is no memory state to save", field="memory"
        )
    disks = {d.target_dev: kind for d in covered if d.target_dev}
    disks.update({d.target_dev: "no" for d in skipped if d.target_dev})
    overlays = overlay_paths(covered) if kind == "external" else {}
    return SnapshotPlan(kind, bool(memory), disks, running, overlays)


def overlay_paths(covered: list[Disk]) -> dict[str, str]:
    """Where each disk's new overlay goes: next to the image on top now, named like
    libvirt's own default (`a.qcow2` -> `a.NAME`, the next one `a.NAME2`), with the
    target dev added when two disks' images share a stem (libvirt refuses those)."""
    stems: dict[str, str] = {}
    for d in covered:
        src = d.source_file or ""
        stems[d.target_dev] = os.path.splitext(src)[0] if "." in os.path.basename(src) else src
    out = {}
    for dev, stem in stems.items():
        clash = list(stems.values()).count(stem) > 1
        out[dev] = f"{stem}-{dev}" if clash else stem
    return out


def check_revert(snap: DomainSnapshot, lib_version: int) -> None:
    if snap.is_external and lib_version < EXTERNAL_REVERT_VERSION:
        major, rest = divmod(lib_version, 1_000_000)
        raise Unsupported(
            f"snapshot '{snap.name}' is external: libvirt {major}.{rest // 1000} cannot revert "
            "external snapshots (9.9 and newer can); its data stays available in the overlay",
            field="name",
        )
