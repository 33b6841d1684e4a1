"""REST shapes of backup policies and their runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class VmRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(max_length=63)
    vm: str = Field(max_length=256)


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64)
    vms: list[VmRef] = Field(default_factory=list, max_length=1000)
    tag: str | None = Field(None, max_length=64)
    host: str | None = Field(None, max_length=63, description="limits `tag` to one host")
    keep_last: int = 7
    keep_daily: int = 0
    keep_weekly: int = 0
    timezone: str = Field("UTC", max_length=64)
    quiesce: Literal["auto", "never", "require"] = "auto"
    method: Literal["snapshot", "backup", "copy"] = Field(
        "snapshot",
        description="snapshot: libvirt snapshots; backup: copies into `pool` with libvirt's "
        "backup API (a copy when libvirt has none); copy: full copies into `pool` through a "
        "temporary external snapshot and block commit",
    )
    pool: str | None = Field(None, max_length=64, description="where backups go (method backup)")
    full_every: int = Field(7, description="a full backup every N, incrementals in between")


class PolicyOut(BaseModel):
    id: int
    name: str
    vms: list[dict[str, str]]
    tag: str | None
    host: str | None
    keep_last: int
    keep_daily: int
    keep_weekly: int
    timezone: str
    quiesce: str
    method: str
    pool: str | None
    full_every: int
    last_run_at: datetime | None
    last_status: str | None
    created_by: str | None
    created_at: datetime


class BackupVmResult(BaseModel):
    host: str
    vm: str
    ok: bool
    snapshot: str | None
    pruned: list[str]
    kept: list[str] = Field(default_factory=list)
    consistency: dict[str, Any] | None = None
    backup: int | None = Field(None, description="the backup's id (method backup)")
    kind: str | None = Field(None, description="full or incremental (method backup)")
    error: dict[str, Any] | None


class BackupRunOut(BaseModel):
    policy: str
    snapshot: str = Field(description="the name asked for; a VM's own may end in -N")
    status: Literal["ok", "partial", "failed"]
    total: int
    succeeded: int
    failed: int
    results: list[BackupVmResult]


class RestoreIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(max_length=63)
    vm: str = Field(max_length=256)
    snapshot: str = Field(max_length=128, description="one of the policy's backups")
    confirm: bool = Field(False, description="must be true: the current state is discarded")


class BackupVolume(BaseModel):
    disk: str
    volume: str
    path: str
    capacity: int
    bytes: int
    sha256: str
    backing: str | None = None


class BackupOut(BaseModel):
    """A backup made with libvirt's backup API (policy method `backup`)."""

    id: int
    policy: str
    policy_id: int | None
    host: str
    vm: str
    vm_uuid: str
    kind: Literal["full", "incremental"]
    parent_id: int | None = Field(description="the backup an incremental is built on")
    checkpoint: str | None = Field(description="the VM's checkpoint the next incremental uses")
    pool: str
    volumes: list[BackupVolume]
    size: int
    status: Literal["running", "ok", "failed"]
    consistency: dict[str, Any] | None
    message: str
    created_by: str | None
    created_at: datetime
    finished_at: datetime | None
    verified_at: datetime | None
    verify_status: str | None
    pruned: list[int] | None = Field(None, description="backups the retention deleted")


class TakeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str = Field(max_length=64, description="a policy with method 'backup'")
    kind: Literal["auto", "full", "incremental"] = "auto"


class RestoreImageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["new", "original"] = "new"
    name: str | None = Field(None, max_length=64, description="the new VM's name (mode new)")
    pool: str | None = Field(None, max_length=64, description="for the new disks (mode new)")
    start: bool = False
    confirm: bool = Field(False, description="mode original: the VM's current disks are lost")
