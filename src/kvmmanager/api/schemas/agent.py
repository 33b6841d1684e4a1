"""Request bodies of the agent endpoints. Results are the agent's own (documented in
docs/protocol.md) or GuestInfo; bounds here match kvmmanager_agent.protocol."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from kvmmanager_agent import protocol


class ExecRequest(BaseModel):
    command: str = Field(min_length=1, max_length=4096)
    args: list[str] = Field(default_factory=list, max_length=1024)
    timeout_seconds: float = Field(default=30, gt=0, le=86400)
    capture_output: bool = True
    working_directory: str | None = Field(default=None, max_length=4096)
    input: str | None = Field(default=None, max_length=protocol.MAX_SIMPLE_FILE_BYTES)
    env: dict[str, str] | None = None


class FileWrite(BaseModel):
    path: str = Field(min_length=1, max_length=4096)
    content: str = Field(max_length=2 * protocol.MAX_SIMPLE_FILE_BYTES)
    encoding: Literal["utf8", "base64"] = "utf8"
    create_dirs: bool = False
    permissions: str | None = Field(default=None, pattern=r"^[0-7]{3,4}$")


class FileOpen(BaseModel):
    path: str = Field(min_length=1, max_length=4096)
    mode: Literal["r", "w"] = "r"
    resume: bool = False
    create_dirs: bool = False
    permissions: str | None = Field(default=None, pattern=r"^[0-7]{3,4}$")


class PowerRequest(BaseModel):
    timeout_seconds: int = Field(default=0, ge=0, le=3600)
    force: bool = False


class FreezeRequest(BaseModel):
    timeout_seconds: float = Field(default=60, ge=1, le=3600)


class SetTime(BaseModel):
    timestamp: float = Field(ge=0)


class SshKeysRequest(BaseModel):
    user: str = Field(min_length=1, max_length=64)
    action: Literal["add", "remove"] = "add"
    key: str = Field(min_length=1, max_length=16384)


class MethodOut(BaseModel):
    name: str
    capability: str
    role: str
    allowed: bool
    timeout_class: str
    description: str
