"""Schemas of host devices, VM displays (SPICE) and passt port forwards."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class HostDeviceOut(BaseModel):
    name: str = Field(description="libvirt node device name, e.g. pci_0000_01_00_0, usb_1_2")
    kind: Literal["pci", "usb"]
    address: str = Field(description="0000:01:00.0, or 'bus 1 device 2' for USB")
    vendor_id: str | None = None
    vendor_name: str | None = None
    product_id: str | None = None
    product_name: str | None = None
    driver: str | None = Field(None, description="host driver bound now (vfio-pci, ...)")
    pci_class: str | None = None
    class_name: str | None = None
    iommu_group: int | None = None
    iommu_members: list[str] = Field([], description="the other devices of its IOMMU group")
    attached_to: list[str] = Field([], description="VMs whose definition has the device")
    refused: str | None = Field(None, description="why it can never be given to a VM")


class HostdevAttach(BaseModel):
    device: str = Field(description="node device name from GET /api/hosts/{host}/devices")
    usb_match: Literal["id", "address"] = Field(
        "id", description="USB: follow the device by vendor/product id, or pin bus/device"
    )
    group: bool = Field(
        False, description="PCI: also attach the other non-bridge devices of its IOMMU group"
    )


class GraphicsSet(BaseModel):
    vnc: bool = Field(True, description="keep the VNC display (the browser console)")
    spice: bool
    usb_redirection: bool | None = Field(
        None, description="SPICE USB redirection (2 slots, qemu-xhci); None keeps it as is"
    )


class ForwardIn(BaseModel):
    proto: Literal["tcp", "udp"]
    host_port: int = Field(ge=1, le=65535)
    guest_port: int | None = Field(None, ge=1, le=65535, description="defaults to host_port")
    host_port_end: int | None = Field(None, ge=1, le=65535, description="forward a range")
    address: str | None = Field(None, description="host IP address to listen on (all if none)")
    mac: str | None = Field(None, description="which passt NIC, when the VM has several")


class ForwardOut(BaseModel):
    proto: str
    address: str | None = None
    host_port: int
    host_port_end: int | None = None
    guest_port: int | None = None
    exclude: bool = False


class PasstNicOut(BaseModel):
    mac: str | None
    forwards: list[ForwardOut]
