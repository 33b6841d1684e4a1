"""Request and response bodies of cloud-image provisioning (routers/cloudinit.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kvmmanager.services.cloudinit.seed import CloudInitSpec


class DirectBoot(BaseModel):
    """Direct kernel boot, for images without a bootloader (a bare root file system)."""

    model_config = ConfigDict(extra="forbid")

    kernel: str = Field(description="host path of the kernel")
    initrd: str | None = Field(None, description="host path of the initramfs")
    cmdline: str | None = None


class CloudImageCreate(BaseModel):
    """A VM from a cloud image volume plus a NoCloud seed (cidata ISO) in its CD-ROM."""

    model_config = ConfigDict(extra="forbid")

    name: str
    pool: str = Field(description="pool of the new disk and seed volumes")
    image: str = Field(description="the cloud image volume (qcow2 or raw)")
    image_pool: str | None = Field(None, description="the image's pool; default: `pool`")
    size_gib: float = Field(description="the new disk's size; never below the image's")
    mode: Literal["linked", "full"] = Field(
        "linked", description="linked: a qcow2 overlay on the image; full: a copy"
    )
    network: str | None = None
    vcpus: int = 1
    memory_mib: int = 1024
    cloud_init: CloudInitSpec
    boot: DirectBoot | None = None
    owner: str | None = None
    start: bool = True


class CloudImageCreated(BaseModel):
    host: str
    name: str
    uuid: str
    disk: str
    seed: str
    mode: str
    instance_id: str
    hostname: str
    agent: bool
    agent_policy: dict[str, Any] | None = Field(
        None, description="the agent config file written into the guest; null: its defaults"
    )
    started: bool
