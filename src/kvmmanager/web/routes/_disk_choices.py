"""The volumes a disk picker offers (Hardware's "Attach disk", the create form's "Import
an existing disk" and "Cloud image"): each named with its pool, never an ISO image (a
CD-ROM's medium), never one the user may not use by ownership (the server refuses it:
`OwnershipService.volume_refusal`), and one a VM holds (this VM's own disk included) is
offered disabled with the reason, as the server refuses it too
(`vm_builder.refuse_unusable_disk`)."""

from __future__ import annotations

from dataclasses import dataclass

from kvmmanager.services.manager import Manager
from kvmmanager.services.storage.xml import VolumeDetails
from kvmmanager.services.users.service import Principal
from kvmmanager.services.vms.builder import is_iso_volume


@dataclass(frozen=True)
class DiskChoice:
    pool: str
    name: str
    in_use_by: tuple[str, ...] = ()  # VMs with it as a disk or in a drive

    @property
    def value(self) -> str:
        """What the form posts, and what the option shows: "pool/volume"."""
        return f"{self.pool}/{self.name}"

    @property
    def reason(self) -> str:
        """Why it cannot be picked ("" when it can), in the words of the server's refusal."""
        if not self.in_use_by:
            return ""
        return "in use by vm " + ", ".join(self.in_use_by)


def disk_choices(
    manager: Manager, host: str, user: Principal | None, pool: str, vols: list[VolumeDetails]
) -> list[DiskChoice]:
    out = []
    for v in vols:
        if is_iso_volume(v.name, v.format):
            continue
        if user is None or manager.ownership.volume_refusal(user, host, pool, v.name, v.path):
            continue
        users = manager.storage.volume_path_in_use_by(host, v.path, pool=pool, volume=v.name)
        out.append(DiskChoice(pool, v.name, tuple(users)))
    return out
