"""REST shape of a host health report (doctor)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

Status = Literal["ok", "warn", "fail"]


class CheckOut(BaseModel):
    name: str
    status: Status
    message: str
    fix: str | None = None
    data: dict[str, Any] = {}


class HealthOut(BaseModel):
    host: str
    uri: str
    status: Status
    checks: list[CheckOut]
    checked_at: float
