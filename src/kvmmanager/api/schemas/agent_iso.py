"""REST shapes of the agent ISO: local location, per-host status, deploy, install into a VM."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

POOL_FIELD = Field(default=None, max_length=256, description="Pool (default: agent.iso_pool)")


class DeployRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pool: str | None = POOL_FIELD


class InstallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pool: str | None = POOL_FIELD
    replace_cd: bool = Field(
        default=False,
        description="when every CD-ROM drive holds another disc (e.g. the install ISO) and "
        "no drive can be added: swap that disc for the agent ISO (never done unasked)",
    )


class CandidateOut(BaseModel):
    source: str
    path: str
    used: bool
    reason: str
    version: str | None = None


class LocationOut(BaseModel):
    path: str | None
    source: str | None
    version: str | None
    current: bool
    candidates: list[CandidateOut]


class IsoStatusOut(BaseModel):
    host: str
    pool: str
    pool_exists: bool
    pool_active: bool
    volume: str
    version: str
    deployed: bool
    current: bool
    path: str | None = None
    sha256: str | None = None
    local_path: str | None = None
    local_sha256: str | None = None
    mode: str | None = None
    readable_by_qemu: bool | None = None
    other_versions: list[str] = []
    used_by: list[str] = []
    reason: str = ""


class InstallOut(BaseModel):
    host: str
    vm: str
    running: bool
    volume: str
    iso_path: str
    channel: str
    channel_live: bool
    cdrom: str
    cdrom_added: bool
    restart_needed: bool
    messages: list[str]
    guest_commands: list[str]
    deploy: dict[str, Any]


class EjectOut(BaseModel):
    applied_live: bool
    next_boot: bool
    message: str
    details: dict[str, Any] = {}
