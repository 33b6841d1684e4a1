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
