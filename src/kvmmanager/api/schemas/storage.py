"""REST shapes of pools and volumes.

Request bodies reuse the service specs (so the API and the service agree on every
field); pydantic bounds the raw types, the service checks the rules and names the field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kvmmanager.services.storage.specs import BackingSpec, PoolSpec, VolumeSpec

Size = int | str


class PoolCreate(PoolSpec):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=256)
    target: str | None = Field(default=None, max_length=4096)
    source_devices: list[str] = Field(default_factory=list, max_length=64)


class PoolOut(BaseModel):
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
    source_devices: list[str] = Field(default_factory=list)
    volumes: int | None = None


class VolumeCreate(VolumeSpec):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=256)
    capacity: Size | None = Field(
        default=None, description="bytes, or a text with a unit: '20G', '512MiB'"
    )
    backing: BackingSpec | None = None


class VolumeOut(BaseModel):
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
    used_by: list[str] = Field(default_factory=list)


class VolumeResize(BaseModel):
    model_config = ConfigDict(extra="forbid")

    capacity: Size = Field(description="the new capacity: bytes, or '20G', '512MiB'")
    shrink: bool = Field(default=False, description="allow a smaller capacity (loses data)")


class VolumeClone(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=256, description="the new volume's name")
    target_pool: str | None = Field(default=None, max_length=256)
    format: Literal["qcow2", "raw"] | None = None


class UploadResult(BaseModel):
    """PUT .../content answers once the data is in: the volume and the upload's job id."""

    job_id: str
    bytes: int
    volume: VolumeOut
