"""Snapshot request and response bodies."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class SnapshotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="default: snap-YYYYMMDD-HHMMSS (UTC)")
    description: str | None = None
    kind: Literal["internal", "external"] | None = Field(
        None, description="default: internal when every disk is qcow2 and no pflash UEFI"
    )
    memory: bool | None = Field(
        None, description="include the memory state (internal only; default: when running)"
    )
    quiesce: Literal["auto", "never", "require"] = Field(
        "auto", description="freeze guest filesystems for a disk-only snapshot of a running VM"
    )


class Consistency(BaseModel):
    method: str = Field(description="kvmm-agent | qemu-ga | none | not-needed")
    level: str = Field(description="full-state | offline | quiesced | crash-consistent")
    frozen_seconds: float | None = None
    message: str = ""


class SnapshotOut(BaseModel):
    host: str
    name: str
    description: str | None = None
    parent: str | None = None
    created: int | None = None
    state: str | None = None
    kind: str
    memory: bool
    current: bool
    disks: dict[str, str]


class SnapshotCreated(SnapshotOut):
    vm: str
    consistency: Consistency


class SnapshotNode(BaseModel):
    name: str
    children: list[SnapshotNode]


class SnapshotList(BaseModel):
    host: str
    vm: str
    uuid: str
    quiesce_policy: str
    current: str | None
    snapshots: list[dict[str, Any]]
    tree: list[SnapshotNode]


class RevertBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: bool | None = Field(
        None, description="true: running afterwards; false: paused/off; default: as taken"
    )
    force: bool = Field(False, description="revert even when libvirt calls it risky")


class RevertOut(BaseModel):
    host: str
    vm: str
    uuid: str
    snapshot: str
    running: bool
    paused: bool


class SnapshotDeleted(BaseModel):
    host: str
    vm: str
    uuid: str
    deleted: list[str]
    merge: str = Field(description="internal | block-commit | offline-commit | ...")


class QuiescePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: Literal["auto", "never"]


class QuiescePolicyOut(BaseModel):
    host: str
    vm: str
    quiesce_policy: str
