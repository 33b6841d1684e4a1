"""Storage specs (pools, volumes) and the rules that make them valid.

The specs are plain pydantic models (no web types) that the REST schemas reuse. Pydantic
checks only types; every rule that names a field is checked here, so callers of the
service get the same `InvalidInput` (-> 422 naming the field) as API clients.
"""

from __future__ import annotations

import posixpath
import re
from typing import Literal

from pydantic import BaseModel, Field

from kvmmanager.core.errors import InvalidInput
from kvmmanager.virt.xml.base import parse_size
from kvmmanager.virt.xml.sizes import format_size

# libvirt object names: no '/', no control characters, no leading '.'/'-' (file names and
# command-line options), short enough for paths and LVM.
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")
POOL_NAME_MAX = 64
VOLUME_NAME_MAX = 128
# A single volume above this is a typo, not a plan (64 TiB, as for VM disks).
MAX_VOLUME_BYTES = 64 << 40
HOST_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.:_-]{0,253}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
# Pool targets that must never be chmod-ed or filled by a pool build.
_FORBIDDEN_TARGETS = frozenset(
    {
        "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/proc",
        "/root", "/run", "/sbin", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/var/tmp",
        "/var/lib/libvirt",
    }
)  # fmt: skip

PoolType = Literal["dir", "logical", "netfs"]
VolumeFormat = Literal["qcow2", "raw"]
UploadFormat = Literal["raw", "iso", "qcow2"]


def check_name(value: object, field: str, max_len: int = POOL_NAME_MAX) -> str:
    """Validate a libvirt object name; the error names `field`."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{field} must not be empty", field=field)
    if len(value) > max_len:
        raise InvalidInput(f"{field} must be at most {max_len} characters", field=field)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidInput(f"{field} must not contain control characters", field=field)
    if "/" in value:
        raise InvalidInput(f"{field} must not contain '/'", field=field)
    if not NAME_RE.fullmatch(value):
        raise InvalidInput(
            f"{field} may hold letters, digits and . _ + - and must not start with . + or -",
            field=field,
        )
    return value


def check_path(value: object, field: str) -> str:
    """An absolute, normalised host path without control characters or '..'."""
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{field} must not be empty", field=field)
    if len(value) > 1024:
        raise InvalidInput(f"{field} must be at most 1024 characters", field=field)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidInput(f"{field} must not contain control characters", field=field)
    if not value.startswith("/"):
        raise InvalidInput(f"{field} must be an absolute path", field=field)
    if ".." in value.split("/"):
        raise InvalidInput(f"{field} must not contain '..'", field=field)
    return posixpath.normpath(value)


def check_size(value: int | str, field: str, *, maximum: int = MAX_VOLUME_BYTES) -> int:
    """Bytes from an int or a text like '20G' / '512MiB'; must be > 0 and sane."""
    if isinstance(value, bool):
        raise InvalidInput(f"{field} must be a size, got {value!r}", field=field)
    if isinstance(value, int) and value < 0:
        raise InvalidInput(f"{field} must not be negative", field=field)
    size = parse_size(value, field=field)
    if size <= 0:
        raise InvalidInput(f"{field} must be greater than 0", field=field)
    if size > maximum:
        raise InvalidInput(f"{field} must be at most {format_size(maximum)}", field=field)
    return size


class PoolSpec(BaseModel):
    """A storage pool to define.

    dir: `target` is the directory. logical: `source_name` is the volume group (default: the
    pool name) and `source_devices` the PVs a build puts it on. netfs: `source_host` and
    `source_path` (the export) are mounted on `target`.
    """

    name: str
    type: PoolType = "dir"
    target: str | None = None
    source_name: str | None = None
    source_devices: list[str] = Field(default_factory=list)
    source_host: str | None = None
    source_path: str | None = None
    source_format: Literal["auto", "nfs", "cifs", "glusterfs"] = "auto"
    build: bool = True
    start: bool = True
    autostart: bool = True


def validate_pool_spec(spec: PoolSpec) -> PoolSpec:
    """Check every rule of `spec`; return a normalised copy."""
    check_name(spec.name, "name", POOL_NAME_MAX)
    out = spec.model_copy(deep=True)
    if spec.type == "dir" or spec.type == "netfs":
        if not spec.target:
            raise InvalidInput(f"target is required for a {spec.type} pool", field="target")
        out.target = check_path(spec.target, "target")
        if out.target in _FORBIDDEN_TARGETS:
            raise InvalidInput(f"target {out.target} is a system directory", field="target")
    if spec.type == "dir":
        for name in ("source_name", "source_host", "source_path"):
            if getattr(spec, name):
                raise InvalidInput(f"{name} is not used by a dir pool", field=name)
        if spec.source_devices:
            raise InvalidInput("source_devices is not used by a dir pool", field="source_devices")
    elif spec.type == "logical":
        out.source_name = check_name(spec.source_name or spec.name, "source_name")
        out.target = None
        out.source_devices = [
            check_path(dev, f"source_devices[{i}]") for i, dev in enumerate(spec.source_devices)
        ]
        if spec.source_host or spec.source_path:
            raise InvalidInput("a logical pool has no source host or path", field="source_host")
    elif spec.type == "netfs":
        if not spec.source_host or not HOST_RE.fullmatch(spec.source_host):
            raise InvalidInput("source_host must be a host name or address", field="source_host")
        if not spec.source_path:
            raise InvalidInput("source_path (the export) is required", field="source_path")
        if spec.source_format == "cifs":
            # CIFS shares are names, not paths.
            if any(ord(ch) < 32 for ch in spec.source_path) or ".." in spec.source_path:
                raise InvalidInput("source_path is not a valid share name", field="source_path")
        else:
            out.source_path = check_path(spec.source_path, "source_path")
        if spec.source_devices:
            raise InvalidInput("source_devices is not used by a netfs pool", field="source_devices")
    return out


class BackingSpec(BaseModel):
    """An existing volume a new qcow2 volume is layered over (copy-on-write)."""

    volume: str
    pool: str | None = None


class VolumeSpec(BaseModel):
    """A volume to create: `capacity` in bytes or as text ('20G'); qcow2 may have a backing
    volume, in which case `capacity` defaults to the backing volume's capacity."""

    name: str
    capacity: int | str | None = None
    format: VolumeFormat = "qcow2"
    backing: BackingSpec | None = None
    preallocate: bool = False


def validate_volume_spec(spec: VolumeSpec) -> tuple[VolumeSpec, int | None]:
    """Check `spec`; return it and its capacity in bytes (None: take the backing's)."""
    check_name(spec.name, "name", VOLUME_NAME_MAX)
    capacity: int | None = None
    if spec.capacity is not None:
        capacity = check_size(spec.capacity, "capacity")
    elif spec.backing is None:
        raise InvalidInput("capacity is required", field="capacity")
    if spec.backing is not None:
        if spec.format != "qcow2":
            raise InvalidInput("only a qcow2 volume can have a backing volume", field="backing")
        check_name(spec.backing.volume, "backing.volume", VOLUME_NAME_MAX)
        if spec.backing.pool is not None:
            check_name(spec.backing.pool, "backing.pool", POOL_NAME_MAX)
        if spec.preallocate:
            raise InvalidInput(
                "a volume with a backing volume cannot be preallocated", field="preallocate"
            )
    return spec, capacity
