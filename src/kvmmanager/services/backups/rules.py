"""What a backup made with libvirt's backup API contains, and the rules around it.

Pure functions (no libvirt, no database), so they are tested on their own:
- which of a domain's disks are backed up (`backup_disks`) and whether incrementals can
  follow (`incremental_refusal`: dirty bitmaps live in qcow2 v3 images only);
- full or incremental (`choose_kind`): a full backup every `full_every`, incrementals on
  the newest backup's checkpoint in between, a full one whenever that chain is broken;
- what the retention deletes (`prune`): the policy's keep rules, widened so that every
  kept incremental keeps the backups it is built on;
- the structural check of a qcow2 image's first bytes (`qcow2_header`).

How a chain reads as a disk: an incremental's target volume is created (through libvirt's
storage API) as a qcow2 overlay whose backing file is the parent backup's volume, and the
backup job (REUSE_EXTERNAL) writes only the clusters changed since the parent's
checkpoint into it. Reading the incremental volume therefore reads the whole disk as it
was at that backup; a restore is one libvirt volume clone (createXMLFrom, which converts
the chain into one standalone image). No qemu-img runs on the host outside libvirt.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kvmmanager.core.errors import InvalidInput
from kvmmanager.services.storage.specs import VOLUME_NAME_MAX
from kvmmanager.virt.xml.domain import Domain

KINDS = ("auto", "full", "incremental")
MAX_FULL_EVERY = 100
QCOW2_MAGIC = b"QFI\xfb"
# A backing file name longer than this in a header is corruption, not a path.
MAX_BACKING_NAME = 4096


@dataclass
class DiskPlan:
    target: str  # vda
    source: str  # the image the VM reads (path), "" when not a file
    format: str  # raw | qcow2 | ...
    compat: str | None = None  # qcow2 version of the source volume, when known
    capacity: int = 0


def backup_disks(xml: Domain) -> tuple[list[DiskPlan], list[str]]:
    """(disks to back up, targets left out): writable disks with media are backed up;
    CD-ROMs, floppies, read-only and shareable disks are not (they are not the VM's
    state, and a shared disk cannot be made consistent from one VM)."""
    plans, skipped = [], []
    for d in xml.devices.disks:
        target = d.target_dev or ""
        if d.device not in (None, "disk") or d.readonly or d.shareable or not d.has_media:
            skipped.append(target)
            continue
        plans.append(DiskPlan(target, d.source_file or "", d.driver_type or "raw"))
    return plans, skipped


def incremental_refusal(disks: list[DiskPlan]) -> str | None:
    """Why no checkpoint (so no incremental) can be kept for these disks, or None."""
    for d in disks:
        if d.format != "qcow2":
            return f"disk {d.target} is {d.format}: checkpoints (dirty bitmaps) need qcow2"
        if d.compat is not None and d.compat != "1.1":
            return (
                f"disk {d.target} is a qcow2 v2 image (compat {d.compat}): dirty bitmaps "
                "need qcow2 v3 (compat 1.1)"
            )
        if d.compat is None:
            return (
                f"disk {d.target} is not a volume of a storage pool: its qcow2 version is unknown"
            )
    return None


@dataclass
class Previous:
    """A finished backup of the VM under the same policy (from the database)."""

    id: int
    kind: str
    checkpoint: str | None
    chain_length: int  # 1 for a full backup, parent's + 1 for an incremental
    disks: tuple[str, ...]


def choose_kind(
    requested: str,
    full_every: int,
    refusal: str | None,
    previous: Previous | None,
    checkpoints: set[str],
    disks: tuple[str, ...],
) -> tuple[str, Previous | None, str]:
    """(kind, parent, why) for the next backup. `checkpoints` are the VM's checkpoints in
    libvirt now; an incremental needs its parent's to still be there."""
    if requested not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}", field="kind")
    reason = ""
    if refusal:
        reason = refusal
    elif previous is None:
        reason = "no earlier backup of this vm by this policy"
    elif previous.checkpoint is None or previous.checkpoint not in checkpoints:
        reason = "the previous backup's checkpoint is gone from the vm"
    elif previous.disks != disks:
        reason = "the vm's disks changed since the previous backup"
    elif requested == "auto" and previous.chain_length >= full_every:
        reason = f"a full backup every {full_every}"
    elif requested == "full":
        reason = "a full backup was asked for"
    if reason:
        if requested == "incremental":
            raise InvalidInput(f"no incremental backup possible: {reason}", field="kind")
        return "full", None, reason
    assert previous is not None  # no previous backup set `reason` above
    return "incremental", previous, f"changes since backup {previous.id}"


MAX_SAME_SECOND = 9


def stamps(when: datetime) -> Iterator[str]:
    """`20261126-010000`, then `-2`, `-3`... for further backups in the same second."""
    base = f"{when:%Y%m%d-%H%M%S}"
    yield base
    for n in range(2, MAX_SAME_SECOND + 1):
        yield f"{base}-{n}"


def volume_name(vm: str, policy: str, stamp: str, disk: str) -> str:
    """`web1-nightly-20261126-010000-vda.qcow2`, cut to libvirt's name limit."""
    tail = f"-{policy}-{stamp}-{disk}.qcow2"
    return vm[: VOLUME_NAME_MAX - len(tail)] + tail


def checkpoint_name(policy: str, stamp: str) -> str:
    return f"kvmm-{policy}-{stamp}"


def prune(backups: list[dict[str, Any]], keep: set[int]) -> tuple[list[int], set[int]]:
    """(ids to delete, newest first; ids kept) of one VM's backups under one policy, given
    the ids the retention rules keep. A kept incremental keeps its whole chain; deleting
    newest first removes an incremental before the backup it is built on."""
    by_id = {b["id"]: b for b in backups}
    kept = set()
    for bid in keep:
        while bid is not None and bid in by_id and bid not in kept:
            kept.add(bid)
            bid = by_id[bid]["parent_id"]
    gone = [
        b["id"] for b in sorted(backups, key=lambda b: b["id"], reverse=True) if b["id"] not in kept
    ]
    return gone, kept


def qcow2_header(data: bytes) -> dict[str, Any]:
    """The fields of a qcow2 header that say the image is whole: magic, version, cluster
    size, virtual size, backing file. `problems` lists what is wrong (empty: fine)."""
    problems: list[str] = []
    out: dict[str, Any] = {"problems": problems}
    if len(data) < 72 or data[:4] != QCOW2_MAGIC:
        problems.append("not a qcow2 image (bad magic)")
        return out
    version, bf_offset, bf_size, cluster_bits, size = struct.unpack(">IQIIQ", data[4:32])
    out.update(version=version, cluster_size=1 << min(cluster_bits, 63), virtual_size=size)
    if version not in (2, 3):
        problems.append(f"unknown qcow2 version {version}")
    if not 9 <= cluster_bits <= 21:
        problems.append(f"cluster_bits {cluster_bits} out of range 9..21")
    out["backing_file"] = None
    if bf_offset:
        if bf_size > MAX_BACKING_NAME or bf_offset + bf_size > len(data):
            problems.append("backing file name outside the header")
        else:
            out["backing_file"] = data[bf_offset : bf_offset + bf_size].decode(
                "utf-8", errors="replace"
            )
    return out
