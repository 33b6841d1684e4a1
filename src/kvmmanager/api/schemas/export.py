"""REST shapes of VM export and import (libvirt domain XML, optionally with disks)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kvmmanager.api.schemas.vms import VmOut
from kvmmanager.services.portability.import_plan import MAX_XML_BYTES


class ExportedXml(BaseModel):
    xml: str


class ImportOptionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=256, description="refused if taken")
    new_identity: bool = Field(False, description="new UUID and MAC addresses")
    network_map: dict[str, str] = Field(default_factory=dict, examples=[{"lan": "default"}])
    pool_map: dict[str, str] = Field(default_factory=dict, examples=[{"images": "default"}])


class ImportXmlIn(ImportOptionsIn):
    xml: str = Field(max_length=MAX_XML_BYTES)


class ImportedVm(BaseModel):
    vm: VmOut
    renamed_from: str | None
    new_uuid: bool
    warnings: list[str]
