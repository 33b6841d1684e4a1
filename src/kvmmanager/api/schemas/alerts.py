"""REST shapes of alert rules, alerts and webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["info", "warning", "critical"]


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=256)
    metric: str = Field(max_length=64, examples=["cpu_pct", "vm_crashed"])
    threshold: float | None = Field(None, description="threshold metrics only")
    op: str = Field(">", max_length=2, description=">, >=, < or <=")
    samples: int = Field(1, description="consecutive samples to fire (and to resolve)")
    severity: Severity = "warning"
    host: str | None = Field(None, max_length=63)
    vm: str | None = Field(None, max_length=256, description="one VM (name or UUID)")
    tag: str | None = Field(None, max_length=64, description="VMs with this tag")
    enabled: bool = True


class RuleOut(BaseModel):
    id: int
    name: str
    metric: str
    op: str
    threshold: float | None
    samples: int
    severity: str
    host: str | None
    vm: str | None
    tag: str | None
    enabled: bool
    created_by: str | None
    created_at: datetime


class AlertOut(BaseModel):
    id: int
    rule_id: int
    rule_name: str
    metric: str
    severity: str
    host: str
    subject: str
    subject_name: str
    state: Literal["firing", "resolved"]
    value: float | None
    message: str
    fired_at: datetime
    resolved_at: datetime | None


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=256)
    url: str = Field(max_length=2048)
    secret: str | None = Field(None, max_length=256, description="generated when omitted")
    min_severity: Severity = "info"
    enabled: bool = True


class WebhookOut(BaseModel):
    id: int
    name: str
    url: str
    min_severity: str
    enabled: bool
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="shown only now: the receiver verifies signatures with it")


class DeliveryOut(BaseModel):
    id: int
    webhook_id: int
    event: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status: int | None
    last_error: str
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]


class PingOut(BaseModel):
    delivery_id: int


class EmailTargetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64)
    smtp_host: str = Field(max_length=255)
    smtp_port: int = 587
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = Field(None, max_length=255)
    password: str | None = Field(None, max_length=255)
    from_addr: str = Field(max_length=255)
    to_addrs: list[str] = Field(max_length=50)
    min_severity: Severity = "warning"
    enabled: bool = True


class EmailTargetOut(BaseModel):
    id: int
    name: str
    smtp_host: str
    smtp_port: int
    security: str
    username: str | None
    from_addr: str
    to_addrs: list[str]
    min_severity: str
    enabled: bool
    created_at: datetime
