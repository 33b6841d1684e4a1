"""REST shapes of virtual networks and DHCP leases."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kvmmanager.services.networks.service import NetworkSpec


class NetworkCreate(NetworkSpec):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=256)
    bridge: str | None = Field(default=None, max_length=256)
    address: str | None = Field(default=None, max_length=64, examples=["10.213.1.1"])
    prefix: int = Field(default=24, ge=0, le=32)
    dhcp_start: str | None = Field(default=None, max_length=64)
    dhcp_end: str | None = Field(default=None, max_length=64)
    forward_dev: str | None = Field(default=None, max_length=256)
    domain: str | None = Field(default=None, max_length=256)


class NetworkOut(BaseModel):
    name: str
    uuid: str
    active: bool
    persistent: bool
    autostart: bool
    forward: str
    bridge: str | None
    address: str | None = None
    prefix: int | None = None
    dhcp_start: str | None = None
    dhcp_end: str | None = None
    forward_dev: str | None = None
    domain: str | None = None


class LeaseOut(BaseModel):
    mac: str
    ip: str
    prefix: int | None
    hostname: str | None
    client_id: str | None
    expires: int | None
    type: str
    iface: str | None = None
