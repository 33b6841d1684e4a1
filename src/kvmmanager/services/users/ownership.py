"""Ownership: the one rule for who may act on an object that belongs to someone.

The rule (`may_act`): an object with an owner may be changed, run, downloaded,
cancelled or read in detail by that owner and by admins; an object without an owner is
shared (the role rules still apply: changes need the operator role). Every check in the
API, the web UI, batches, schedules, backup policies and the event stream goes through
`may_act`; this module also says where each kind of object keeps its owner:

- a VM: `owner` in its domain metadata (the inventory);
- a schedule, a backup policy, a job: the `created_by` of its row;
- an export bundle: an `object_owners` row written when its job made the file (the
  job's user);
- a volume: libvirt keeps no metadata on volumes, so the manager records the operator
  who created, uploaded or cloned it (an `object_owners` row keyed by host + pool +
  volume name, replaced when a volume of that name is made again, removed when the
  manager deletes it; what an admin makes is shared media and gets no row) AND every
  VM whose disk or CD-ROM it is lends the volume its owner (a VM deleted with its
  disks kept passes its owner on to them: `inherit_disks`). A caller must pass the rule
  for each of these owners: another user's VM disk is theirs even if you uploaded it,
  and your upload stays yours.

Acting later (a schedule firing, a policy run): `acting_principal` re-reads the user who
set it up at that moment, so a user deleted, disabled or demoted to viewer since loses
the power, and the run has that user's rights, never more.
"""

from __future__ import annotations

import contextlib
import posixpath
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from kvmmanager.core.errors import KvmmError, PermissionDenied
from kvmmanager.db.models import User
from kvmmanager.db.ops_models import ObjectOwner
from kvmmanager.services.users.service import Principal
from kvmmanager.services.vms.spec import SEED_SUFFIX, VmSpec
from kvmmanager.virt.events import Event
from kvmmanager.virt.inventory import DomainInfo, Inventory

VOLUME, BUNDLE = "volume", "bundle"


def may_act(principal: Principal, owner: str | None) -> bool:
    """THE rule: admins act on everything; an owned object is its owner's alone; an
    object without an owner is shared."""
    return principal.has_role("admin") or not owner or owner == principal.username


def refusal(
    principal: Principal, kind: str, name: str, owner: str | None
) -> PermissionDenied | None:
    """The error `may_act` implies, naming the object (field = its kind), or None."""
    if may_act(principal, owner):
        return None
    return PermissionDenied(f"{kind} '{name}' belongs to '{owner}'", field=kind)


def check(principal: Principal, kind: str, name: str, owner: str | None) -> None:
    denied = refusal(principal, kind, name, owner)
    if denied is not None:
        raise denied


def check_owner_field(principal: Principal, owner: str | None) -> None:
    """A create that names the new object's owner: only admins give objects away (an
    operator planting VMs on another's account would put them under that user's tag
    schedules and batches)."""
    if owner is not None and owner != principal.username and not principal.has_role("admin"):
        raise PermissionDenied("only an admin may create a VM owned by another user", field="owner")


@dataclass(frozen=True, slots=True)
class VolumeOwner:
    """One owner of a volume and why: `recorded` (created/uploaded/cloned it) or the VM
    whose disk it is."""

    owner: str
    via_vm: str | None = None


class OwnershipService:
    def __init__(self, db: sessionmaker[Session], inventory: Inventory) -> None:
        self._db = db
        self._inventory = inventory

    # -- VMs -----------------------------------------------------------------------------

    def vm_owner(self, host: str, vm: str) -> str | None:
        """The VM's owner from the inventory; None for an unknown VM (whose own lookup
        answers 404) or one without an owner."""
        try:
            return self._inventory.domain(host, vm).owner
        except KvmmError:
            return None

    def vm_refusal(self, principal: Principal, host: str, vm: str) -> PermissionDenied | None:
        try:
            d = self._inventory.domain(host, vm)
        except KvmmError:
            return None  # unknown host or VM: its own lookup answers 404
        return refusal(principal, "vm", d.name, d.owner)

    def check_vm(self, principal: Principal, host: str, vm: str) -> None:
        denied = self.vm_refusal(principal, host, vm)
        if denied is not None:
            raise denied

    def check_targets(self, principal: Principal, targets: list[dict[str, str]]) -> None:
        """Each {"host", "vm"} a schedule or policy names, at the moment it is set up."""
        for t in targets:
            self.check_vm(principal, t["host"], t["vm"])

    # -- recorded owners (volumes, bundles) ----------------------------------------------

    def record(self, kind: str, host: str, key: str, owner: str | None) -> None:
        """Remember `owner` for the object (replacing any earlier one); None forgets."""
        with self._db.begin() as s:
            s.execute(
                delete(ObjectOwner).where(
                    ObjectOwner.kind == kind, ObjectOwner.host == host, ObjectOwner.key == key
                )
            )
            if owner:
                s.add(ObjectOwner(kind=kind, host=host, key=key, owner=owner))

    def forget(self, kind: str, host: str, key: str) -> None:
        self.record(kind, host, key, None)

    def recorded(self, kind: str, host: str, key: str) -> str | None:
        with self._db() as s:
            return s.scalar(
                select(ObjectOwner.owner).where(
                    ObjectOwner.kind == kind, ObjectOwner.host == host, ObjectOwner.key == key
                )
            )

    # -- volumes -------------------------------------------------------------------------

    @staticmethod
    def volume_key(pool: str, volume: str) -> str:
        return f"{pool}/{volume}"

    def record_volume(self, host: str, pool: str, volume: str, owner: str | None) -> None:
        self.record(VOLUME, host, self.volume_key(pool, volume), owner)

    def forget_volume(self, host: str, pool: str, volume: str) -> None:
        self.forget(VOLUME, host, self.volume_key(pool, volume))

    def volume_owners(
        self, host: str, pool: str, volume: str, path: str | None = None
    ) -> list[VolumeOwner]:
        """Every owner the volume has: the recorded one, and the owner of each VM with a
        disk on it (by pool/volume, or by `path` when known)."""
        if path is None:
            # Pool volumes live at <pool target>/<name> (dir, fs, netfs, logical pools).
            with contextlib.suppress(KvmmError):
                target = self._inventory.pool(host, pool).path
                path = f"{target.rstrip('/')}/{volume}" if target else None
        out = []
        rec = self.recorded(VOLUME, host, self.volume_key(pool, volume))
        if rec:
            out.append(VolumeOwner(rec))
        for dom in self._inventory.domains(host):
            if not dom.owner:
                continue
            for disk in dom.disks:
                if (disk.pool == pool and disk.volume == volume) or (path and disk.source == path):
                    out.append(VolumeOwner(dom.owner, dom.name))
                    break
        return out

    def volume_refusal(
        self, principal: Principal, host: str, pool: str, volume: str, path: str | None = None
    ) -> PermissionDenied | None:
        for o in self.volume_owners(host, pool, volume, path):
            if not may_act(principal, o.owner):
                why = f" (a disk of vm '{o.via_vm}')" if o.via_vm else ""
                return PermissionDenied(
                    f"volume '{volume}' belongs to '{o.owner}'{why}", field="volume"
                )
        return None

    def check_volume(
        self, principal: Principal, host: str, pool: str, volume: str, path: str | None = None
    ) -> None:
        denied = self.volume_refusal(principal, host, pool, volume, path)
        if denied is not None:
            raise denied

    def check_volumes(
        self, principal: Principal, host: str, refs: list[tuple[str | None, str | None]]
    ) -> None:
        """Each existing (pool, volume) a request names in its body (a disk to attach,
        install media, a backing or image volume): the caller's to use, or refused."""
        for pool, volume in refs:
            if pool and volume:
                self.check_volume(principal, host, pool, volume)

    def check_vm_spec_volumes(self, principal: Principal, host: str, spec: VmSpec) -> None:
        """The existing volumes a new VM would use: its disks and its install media."""
        refs = [(d.pool, d.volume) for d in spec.disks if d.volume]
        if spec.install.kind in ("iso", "import"):
            refs.append((spec.install.pool, spec.install.volume))
        self.check_volumes(principal, host, refs)
        if spec.install.kind == "kernel":
            self.check_volume_paths(principal, host, spec.install.kernel, spec.install.initrd)

    def check_volume_paths(self, principal: Principal, host: str, *paths: str | None) -> None:
        """Volumes named by their path (a direct-boot kernel or initrd): each one in a
        pool's directory is held to the rule like a volume named by pool and name."""
        by_dir = {p.path.rstrip("/"): p.name for p in self._inventory.pools(host) if p.path}
        for given in paths:
            # '/pool//vmlinuz' and '/pool/./vmlinuz' are the same file to libvirt.
            path = posixpath.normpath("/" + given.lstrip("/")) if given else ""
            folder, _, name = path.rpartition("/")
            pool = by_dir.get(folder)
            if pool and name:
                self.check_volume(principal, host, pool, name, path)

    def inherit_disks(self, host: str, dom: DomainInfo, deleted: set[str]) -> None:
        """`dom` (owned) was deleted: its writable disks that are pool volumes and were
        not deleted with it keep its owner, unless they already have a recorded one; so
        does its own cloud-init seed (`<vm>-seed.iso`: password hashes, SSH keys). Other
        CD-ROMs and read-only disks (shared install media) are left alone."""
        if not dom.owner:
            return
        by_path = {p.path.rstrip("/"): p.name for p in self._inventory.pools(host) if p.path}
        for disk in dom.disks:
            if disk.source and disk.source in deleted:
                continue
            pool, volume = disk.pool, disk.volume
            if not (pool and volume) and disk.source:
                folder, _, name = disk.source.rpartition("/")
                pool, volume = by_path.get(folder), name
            if not (pool and volume):
                continue
            media = disk.device != "disk" or disk.readonly
            if media and volume != f"{dom.name}{SEED_SUFFIX}":
                continue
            if self.recorded(VOLUME, host, self.volume_key(pool, volume)) is None:
                self.record_volume(host, pool, volume, dom.owner)

    def record_new_volume(
        self, principal: Principal | None, host: str, pool: str, volume: str
    ) -> None:
        """`principal` made the volume (create, upload, clone). An operator's volume is
        theirs; an admin's is shared (admins make the shared media: install ISOs, cloud
        images), as is one the service layer made for nobody in particular."""
        owner = None if principal is None or principal.has_role("admin") else principal.username
        self.record_volume(host, pool, volume, owner)

    # -- bundles -------------------------------------------------------------------------

    def record_bundle(self, bundle_id: str, owner: str | None) -> None:
        self.record(BUNDLE, "", bundle_id, owner)

    def recorded_bundle(self, bundle_id: str) -> str | None:
        """The bundle's owner, when an export recorded one."""
        return self.recorded(BUNDLE, "", bundle_id)

    def forget_bundle(self, bundle_id: str) -> None:
        self.forget(BUNDLE, "", bundle_id)

    def check_bundle(self, principal: Principal, bundle_id: str) -> None:
        check(principal, "bundle", bundle_id, self.recorded(BUNDLE, "", bundle_id))

    # -- acting later --------------------------------------------------------------------

    def acting_principal(self, username: str | None, what: str) -> Principal:
        """The user who set `what` up (a schedule, a policy), as they are NOW: refused
        when there is none, or they were deleted, disabled or can no longer change
        anything. `what` names the object in the error."""
        if not username:
            raise PermissionDenied(f"{what} has no recorded creator to act as", field="created_by")
        with self._db() as s:
            user = s.scalar(select(User).where(User.username == username))
        if user is None:
            raise PermissionDenied(
                f"{what}: its creator '{username}' no longer exists", field="created_by"
            )
        if user.disabled:
            raise PermissionDenied(
                f"{what}: its creator '{username}' is disabled", field="created_by"
            )
        principal = Principal(user.id, user.username, user.role, via="local")
        if not principal.has_role("operator"):
            raise PermissionDenied(
                f"{what}: its creator '{username}' is now a {user.role} and may not change "
                "anything",
                field="created_by",
            )
        return principal


def event_visible(principal: Principal, event: Event) -> bool:
    """Whether `principal` may see `event` on the live stream: the same rule as the REST
    reads. A job's events (`job.*`: target, progress, result) are its creator's, as
    GET /api/jobs/{id} is; the manager instances' events (`instance.*`) are admins', as
    GET /api/instances is; every other kind is about objects every role may read (VMs,
    hosts, pools, networks, schedules and their runs, alerts)."""
    if event.kind.startswith("job."):
        return may_act(principal, event.data.get("created_by"))
    if event.kind.startswith("instance."):
        return principal.has_role("admin")
    return True
