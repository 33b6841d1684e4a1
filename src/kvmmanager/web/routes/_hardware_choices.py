"""What the Hardware tab's pickers offer: each active pool's volumes (ISO images apart,
for the CD-ROM), the disc each CD-ROM drive holds as the picker names it, and the pool an
"Upload an ISO" link leads to.

A drive's disc is named by pool and volume when libvirt's XML says so, and otherwise by
its file, matched against the pools' volume paths (an ISO inserted as a plain file)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kvmmanager.core.errors import KvmmError
from kvmmanager.services.manager import Manager
from kvmmanager.services.users.service import Principal
from kvmmanager.virt.inventory import DomainInfo
from kvmmanager.web.routes._disk_choices import DiskChoice, disk_choices

# The pool a fresh host's tools (virt-install, virt-manager, this manager's doctor) use.
DEFAULT_POOL = "default"


@dataclass(frozen=True)
class PoolVolumes:
    name: str
    volumes: list[str]
    isos: list[str]  # ISO images only: never another VM's disk as a CD
    paths: dict[str, str] = field(default_factory=dict)  # volume path -> its name
    sizes: dict[str, int] = field(default_factory=dict)  # volume name -> capacity, bytes
    disks: list[DiskChoice] = field(default_factory=list)  # for "Attach disk"


@dataclass(frozen=True)
class Size:
    """A memory size as the form shows it: GiB when it is whole GiB, else MiB."""

    value: int | float
    unit: str


def memory_size(kib: int) -> Size:
    mib = kib // 1024
    return Size(mib // 1024, "GiB") if mib and mib % 1024 == 0 else Size(mib, "MiB")


def disk_sizes(vm: DomainInfo, pools: list[PoolVolumes]) -> dict[str, int]:
    """Each disk's capacity in bytes by target, where a pool knows its volume."""
    out = {}
    for d in vm.disks:
        held = _held(d.pool, d.volume, d.source, pools)
        if held:
            pool, _, volume = held.partition("/")
            for p in pools:
                if p.name == pool and volume in p.sizes:
                    out[d.target] = p.sizes[volume]
    return out


@dataclass(frozen=True)
class CdChoices:
    inserted: dict[str, str]  # CD-ROM target -> "pool/volume" of the disc it holds
    upload_pool: str | None  # where "Upload an ISO" leads


async def pools_with_volumes(
    manager: Manager, host: str, user: Principal | None
) -> list[PoolVolumes]:
    """Active pools and their volumes for the CD-ROM and disk pickers ([] when the host
    cannot say); the disk picker's as `user` may use them."""
    out = []
    try:
        for pool in await manager.storage.list_pools(host):
            if not pool.active:
                continue
            vols = await manager.storage.list_volumes(host, pool.name)
            isos = [v.name for v in vols if v.format == "iso" or v.name.lower().endswith(".iso")]
            out.append(
                PoolVolumes(
                    name=pool.name,
                    volumes=[v.name for v in vols],
                    isos=isos,
                    paths={v.path: v.name for v in vols if v.path},
                    sizes={v.name: v.capacity for v in vols},
                    disks=disk_choices(manager, host, user, pool.name, vols),
                )
            )
    except KvmmError:
        return []
    return out


def _held(
    pool: str | None, volume: str | None, source: str | None, pools: list[PoolVolumes]
) -> str | None:
    for p in pools:
        if pool and volume and p.name == pool and volume in p.volumes:
            return f"{p.name}/{volume}"
        if source and source in p.paths:
            return f"{p.name}/{p.paths[source]}"
    return None


def cd_choices(vm: DomainInfo, pools: list[PoolVolumes]) -> CdChoices:
    """The disc each CD-ROM drive holds (preselected in its picker), and the pool to
    upload an ISO into: the one of a disc the VM holds, else one that has ISOs, else
    `default`, else the first."""
    inserted = {}
    for d in vm.disks:
        if d.device == "cdrom":
            held = _held(d.pool, d.volume, d.source, pools)
            if held:
                inserted[d.target] = held
    names = [p.name for p in pools]
    candidates = [
        *(v.partition("/")[0] for v in inserted.values()),
        *(p.name for p in pools if p.isos),
        *([DEFAULT_POOL] if DEFAULT_POOL in names else []),
        *names,
    ]
    return CdChoices(inserted=inserted, upload_pool=candidates[0] if candidates else None)
