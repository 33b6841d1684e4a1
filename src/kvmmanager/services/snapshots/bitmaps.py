"""Why an internal snapshot cannot be reverted while the VM's disks hold dirty bitmaps.

A `--method backup` policy leaves a libvirt checkpoint per backup, which is a QEMU dirty
bitmap inside each qcow2 image; QEMU refuses to apply an internal snapshot to an image
holding any bitmap ("Device has active dirty bitmaps", qemu-img offline and loadvm alike).
libvirt passes that on as an internal error, which said nothing about the backups behind
it, so the revert is refused first, naming the backups and what the user can do instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import libvirt

from kvmmanager.core.errors import Conflict
from kvmmanager.virt.errors import libvirt_message

QEMU_BITMAP_REFUSAL = "active dirty bitmaps"


@dataclass(frozen=True)
class HeldCheckpoint:
    """A checkpoint of the VM and the backup (of a policy) that made it, when known."""

    checkpoint: str
    backup_id: int | None = None
    policy: str | None = None


def _what(h: HeldCheckpoint) -> str:
    if h.backup_id is None:
        return f"checkpoint '{h.checkpoint}' (not made by kvm-manager)"
    return f"checkpoint '{h.checkpoint}' of backup {h.backup_id} (policy '{h.policy}')"


def checkpoints_refusal(vm: str, snapshot: str, held: Sequence[HeldCheckpoint]) -> Conflict:
    """The 409 for reverting internal snapshot `snapshot` of `vm` while `held` exist."""
    ours = sorted((h for h in held if h.backup_id is not None), key=lambda h: -(h.backup_id or 0))
    foreign = [h for h in held if h.backup_id is None]
    ways = []
    if ours:
        newest = ours[0].backup_id
        ids = " ".join(str(h.backup_id) for h in ours)
        ways.append(
            f"restore a backup to a new VM instead (kvm-manager backup restore-image {vm} "
            f"{newest} --name NEW-NAME)"
        )
        ways.append(
            "or, if those backups can go, start the VM (a stopped VM keeps the bitmaps when "
            "only the checkpoint's metadata can be deleted), delete them newest first "
            f"(kvm-manager backup delete-image {vm} ID, for ID in {ids}), then revert"
        )
    if foreign:
        names = " ".join(h.checkpoint for h in foreign)
        ways.append(f"delete the other checkpoints with virsh checkpoint-delete {vm} ({names})")
    return Conflict(
        f"vm '{vm}' cannot be reverted to internal snapshot '{snapshot}': its disk images "
        f"hold QEMU dirty bitmaps for its backup checkpoints "
        f"({', '.join(_what(h) for h in held)}), and QEMU cannot revert an internal "
        f"snapshot of an image that holds dirty bitmaps. To get the VM back: "
        f"{'; '.join(ways)}",
        field="snapshot",
        details={"checkpoints": [h.checkpoint for h in held]},
    )


def stopped_snapshot_refusal(vm: str, held: Sequence[HeldCheckpoint]) -> Conflict:
    """The 409 for a snapshot of shut-off `vm` while backup checkpoints `held` exist:
    libvirt cannot snapshot a stopped VM's disks then ("cannot perform block operations
    while checkpoint exists"), while a running VM takes an external disk-only one."""
    ours = sorted(h.backup_id for h in held if h.backup_id is not None)
    ways = [
        "start the VM and take the snapshot while it runs, with kind='external' and "
        "memory=false (libvirt allows that next to checkpoints)"
    ]
    if ours:
        ids = " ".join(str(i) for i in reversed(ours))
        ways.append(
            "or, if those backups can go, start the VM, delete them newest first "
            f"(kvm-manager backup delete-image {vm} ID, for ID in {ids}), and snapshot it "
            "then (the next backup of the policy is a full one)"
        )
    foreign = [h.checkpoint for h in held if h.backup_id is None]
    if foreign:
        ways.append(f"delete the other checkpoints with virsh checkpoint-delete {vm} "
                    f"({' '.join(foreign)})")  # fmt: skip
    return Conflict(
        f"vm '{vm}' is shut off and has backup checkpoints "
        f"({', '.join(_what(h) for h in held)}); libvirt cannot snapshot the disks of a "
        f"stopped VM while checkpoints exist. To snapshot it: {'; '.join(ways)}",
        field="vm",
        details={"checkpoints": [h.checkpoint for h in held]},
    )


def bitmaps_refusal(vm: str, snapshot: str, exc: libvirt.libvirtError) -> Conflict | None:
    """QEMU's refusal, when it still comes (bitmaps left without a checkpoint, e.g. by a
    checkpoint whose metadata only was deleted on a stopped VM), as a 409; None for any
    other libvirt error."""
    msg = libvirt_message(exc)
    if QEMU_BITMAP_REFUSAL not in msg:
        return None
    err = Conflict(
        f"vm '{vm}' cannot be reverted to internal snapshot '{snapshot}': its disk images "
        "hold QEMU dirty bitmaps (left by backups whose checkpoints are gone), and QEMU "
        "cannot revert an internal snapshot of an image that holds dirty bitmaps. Restore "
        f"a backup to a new VM instead (kvm-manager backup restore-image {vm} ID --name "
        f"NEW-NAME), or remove the bitmaps on the host (qemu-img bitmap --remove). "
        f"libvirt said: {msg}",
        field="snapshot",
    )
    err.__cause__ = exc
    return err
