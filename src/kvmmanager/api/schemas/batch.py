"""REST shapes of batch actions (one action on many VMs, a result per VM)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kvmmanager.services.automation.batch import DEFAULT_CONCURRENCY, MAX_TARGETS

BatchAction = Literal[
    "start", "shutdown", "destroy", "reboot", "reset", "suspend", "resume", "snapshot", "delete"
]


class VmTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(max_length=256, examples=["local"])
    vm: str = Field(max_length=256, description="name or UUID", examples=["web1"])


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vms: list[VmTarget] = Field(default_factory=list, max_length=MAX_TARGETS)
    tag: str | None = Field(None, max_length=256, description="also every VM with this tag")
    host: str | None = Field(None, max_length=256, description="limit the tag to one host")
    mode: Literal["acpi", "agent", "auto"] = Field("auto", description="shutdown only")
    remove_volumes: bool = Field(False, description="delete only: remove disk volumes too")
    snapshot_name: str | None = Field(
        None, max_length=256, description="snapshot only (default: a time-stamped name)"
    )
    # The service names the field when it is out of range (1..16).
    concurrency: int = DEFAULT_CONCURRENCY


class BatchItem(BaseModel):
    host: str
    vm: str
    ok: bool
    state: str | None
    message: str
    error: dict[str, Any] | None
    details: dict[str, Any]


class BatchResult(BaseModel):
    action: str
    total: int
    succeeded: int
    failed: int
    results: list[BatchItem]
