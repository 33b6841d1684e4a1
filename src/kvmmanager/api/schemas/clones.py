"""Clone and template request/response bodies."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CloneBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the new VM's name")
    mode: Literal["full", "linked"] = Field(
        "full", description="linked: qcow2 overlays on the source's disks (templates only)"
    )
    consistent: Literal["refuse", "snapshot"] = Field(
        "refuse",
        description="a running source: refuse, or copy under a temporary external snapshot",
    )
    start: bool = False


class DeployBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the new VM's name")
    mode: Literal["full", "linked"] = "linked"
    start: bool = False


class TemplateMark(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template: bool = Field(description="true: make it a template; false: a VM again")


class TemplateOut(BaseModel):
    host: str
    name: str
    uuid: str
    template: bool
    description: str | None = None
    linked_clones: list[str]
