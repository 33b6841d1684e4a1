"""The libvirt side of storage, for code already on a host's worker thread: pool and
volume XML through the `kvmmanager.virt.xml` models (checked against libvirt's schema
before libvirt sees it), what the service reports about a pool or volume (read from
their XML, never by string parsing), lookups that raise NotFound/Conflict naming the
field, and the pool actions with their state checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import libvirt

from kvmmanager.core.errors import Conflict, NotFound
from kvmmanager.services.storage.specs import (
    POOL_NAME_MAX,
    VOLUME_NAME_MAX,
    PoolSpec,
    check_name,
)
from kvmmanager.virt.errors import libvirt_message
from kvmmanager.virt.xml.pool import Pool
from kvmmanager.virt.xml.validate import validate_xml
from kvmmanager.virt.xml.volume import Volume

_POOL_STATES = {
    libvirt.VIR_STORAGE_POOL_INACTIVE: "inactive",
    libvirt.VIR_STORAGE_POOL_BUILDING: "building",
    libvirt.VIR_STORAGE_POOL_RUNNING: "running",
    libvirt.VIR_STORAGE_POOL_DEGRADED: "degraded",
    libvirt.VIR_STORAGE_POOL_INACCESSIBLE: "inaccessible",
}


def build_pool_xml(spec: PoolSpec) -> str:
    """A validated spec (see `validate_pool_spec`) -> pool XML."""
    pool = Pool(type=spec.type, name=spec.name)
    if spec.type == "logical":
        vg = spec.source_name or spec.name
        if spec.source_devices:
            pool.source_devices = list(spec.source_devices)
        pool.source_name = vg
        pool.source_format = "lvm2"
        pool.target_path = f"/dev/{vg}"
    elif spec.type == "netfs":
        pool.source_host_name = spec.source_host
        pool.source_dir = spec.source_path
        pool.source_format = spec.source_format
        pool.target_path = spec.target
    else:
        pool.target_path = spec.target
    xml = pool.to_xml()
    validate_xml(xml, "pool")
    return xml


QCOW2_COMPAT = "1.1"


def build_volume_xml(
    name: str,
    capacity: int,
    fmt: str,
    *,
    backing: tuple[str, str] | None = None,
    preallocate: bool = False,
) -> str:
    """Volume XML: thin unless `preallocate`; `backing` is (path, format) of the base."""
    vol = Volume(name=name, capacity=capacity, target_format=fmt)
    vol.allocation = capacity if preallocate and fmt == "raw" else 0
    if fmt == "qcow2":
        # libvirt writes qcow2 v2 (compat 0.10) unless asked: v3 is what dirty bitmaps
        # (incremental backups) and lazy refcounts need.
        vol.compat = QCOW2_COMPAT
    if backing is not None:
        vol.backing_path, vol.backing_format = backing
    xml = vol.to_xml()
    validate_xml(xml, "volume")
    return xml


@dataclass(slots=True)
class PoolDetails:
    name: str
    uuid: str
    type: str
    state: str
    active: bool
    persistent: bool
    autostart: bool
    capacity: int
    allocation: int
    available: int
    target: str | None = None
    source_name: str | None = None
    source_host: str | None = None
    source_path: str | None = None
    source_format: str | None = None
    source_devices: list[str] = field(default_factory=list)
    volumes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class VolumeDetails:
    name: str
    pool: str
    key: str
    path: str
    type: str
    format: str | None
    capacity: int
    allocation: int
    physical: int | None = None
    backing_path: str | None = None
    backing_format: str | None = None
    used_by: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pool_model(pool: libvirt.virStoragePool) -> Pool:
    return Pool.from_xml(pool.XMLDesc(0))


def pool_details(pool: libvirt.virStoragePool) -> PoolDetails:
    """Everything the API shows about a pool (call in a worker thread)."""
    state, capacity, allocation, available = pool.info()
    active = bool(pool.isActive())
    model = pool_model(pool)
    return PoolDetails(
        name=pool.name(),
        uuid=pool.UUIDString(),
        type=model.type or "",
        state=_POOL_STATES.get(state, "unknown"),
        active=active,
        persistent=bool(pool.isPersistent()),
        autostart=bool(pool.autostart()),
        capacity=capacity,
        allocation=allocation,
        available=available,
        target=model.target_path,
        source_name=model.source_name,
        source_host=model.source_host_name,
        source_path=model.source_dir,
        source_format=model.source_format,
        source_devices=list(model.source_devices),
        volumes=pool.numOfVolumes() if active else None,
    )


def volume_details(pool_name: str, vol: libvirt.virStorageVol) -> VolumeDetails:
    """Everything the API shows about a volume (call in a worker thread)."""
    model = Volume.from_xml(vol.XMLDesc(0))
    return VolumeDetails(
        name=vol.name(),
        pool=pool_name,
        key=vol.key(),
        path=vol.path(),
        type=model.type or "file",
        format=model.target_format,
        capacity=model.capacity or 0,
        allocation=model.allocation or 0,
        physical=model.physical,
        backing_path=model.backing_path,
        backing_format=model.backing_format,
    )


def lookup_pool(conn: libvirt.virConnect, name: str) -> libvirt.virStoragePool:
    check_name(name, "pool", POOL_NAME_MAX)
    try:
        return conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise NotFound(f"pool '{name}' not found", field="pool") from exc
        raise


def active_pool(conn: libvirt.virConnect, name: str) -> libvirt.virStoragePool:
    pool = lookup_pool(conn, name)
    if not pool.isActive():
        raise Conflict(f"pool '{name}' is not active: start it first", field="pool")
    return pool


def lookup_volume(pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol:
    check_name(name, "volume", VOLUME_NAME_MAX)
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise NotFound(
                f"volume '{name}' not found in pool '{pool.name()}'", field="volume"
            ) from exc
        raise


def volume_exists(pool: libvirt.virStoragePool, name: str) -> bool:
    try:
        pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return False
        raise
    return True


def build_flags(pool_type: str) -> int:
    # Never wipe a disk that already carries a file system or LVM signature.
    return libvirt.VIR_STORAGE_POOL_BUILD_NO_OVERWRITE if pool_type == "logical" else 0


def _pool_start(pool: libvirt.virStoragePool) -> None:
    if pool.isActive():
        raise Conflict(f"pool '{pool.name()}' is already active", field="pool")
    with host_refusal(pool.connect(), "pool"):
        pool.create(0)


def _pool_stop(pool: libvirt.virStoragePool) -> None:
    if not pool.isActive():
        raise Conflict(f"pool '{pool.name()}' is not active", field="pool")
    pool.destroy()


def _pool_build(pool: libvirt.virStoragePool) -> None:
    if pool.isActive():
        raise Conflict(f"pool '{pool.name()}' is active: stop it before building", field="pool")
    with host_refusal(pool.connect(), "pool"):
        pool.build(build_flags(pool_model(pool).type or ""))


def _pool_refresh(pool: libvirt.virStoragePool) -> None:
    if not pool.isActive():
        raise Conflict(f"pool '{pool.name()}' is not active", field="pool")
    # "asynchronous jobs running" (a volume being built or cloned) is a 409, not a 500.
    with host_refusal(pool.connect(), "pool"):
        pool.refresh(0)


def _pool_autostart(pool: libvirt.virStoragePool, enabled: bool) -> None:
    if not pool.isPersistent():
        raise Conflict(f"pool '{pool.name()}' is transient: it cannot autostart", field="pool")
    pool.setAutostart(1 if enabled else 0)


POOL_ACTIONS: dict[str, Callable[[libvirt.virStoragePool], None]] = {
    "start": _pool_start,
    "stop": _pool_stop,
    "build": _pool_build,
    "refresh": _pool_refresh,
    "autostart": lambda p: _pool_autostart(p, True),
    "noautostart": lambda p: _pool_autostart(p, False),
}


_REFUSALS = frozenset({libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_ERR_SYSTEM_ERROR})


@contextmanager
def host_refusal(conn: libvirt.virConnect, field: str) -> Iterator[None]:
    """Turn libvirt's generic "internal/system error" from building or starting host
    objects (a bridge or subnet already in use, a missing directory, a failed mount) into
    a Conflict naming `field`: the host's state is in the way, not the server broken.
    Errors on a dead connection pass through, so they still mean "host unavailable"."""
    try:
        yield
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in _REFUSALS and _alive(conn):
            raise Conflict(libvirt_message(exc), field=field) from exc
        raise


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive() == 1)
    except libvirt.libvirtError:
        return False
