"""Alerts, alert rules and webhooks.

GET  /api/alerts                          firing and resolved alerts, newest first
GET  /api/alert-rules, POST, GET/DELETE /api/alert-rules/{rule}, POST .../enable|disable
     (viewers read; operators write)
/api/webhooks..., /api/email-targets...   admin only: URLs, deliveries and SMTP logins
                                          may carry secrets, and both make the server
                                          send requests to any address
Live notifications: `alert.firing` / `alert.resolved` events on /api/events.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Query, Response, status

from kvmmanager.api.deps import AdminUser, CurrentUser, ManagerDep, no_content
from kvmmanager.api.schemas.alerts import (
    AlertOut,
    DeliveryOut,
    EmailTargetIn,
    EmailTargetOut,
    PingOut,
    RuleIn,
    RuleOut,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
)
from kvmmanager.api.schemas.common import ERROR_RESPONSES
from kvmmanager.services.alerts.email import EmailSpec
from kvmmanager.services.alerts.service import RuleSpec

router = APIRouter(tags=["alerts"], responses=ERROR_RESPONSES)
RULE = "/api/alert-rules/{rule}"
HOOK = "/api/webhooks/{webhook}"


@router.get("/api/alerts", name="alerts.list", response_model=list[AlertOut])
async def list_alerts(
    *,
    state: Literal["firing", "resolved"] | None = None,
    rule: str | None = Query(None, description="rule name or id"),
    limit: int = Query(100, description="1-1000"),
    manager: ManagerDep,
) -> Any:
    return manager.alerts.list_alerts(state=state, rule=rule, limit=limit)


@router.get("/api/alert-rules", name="alerts.rules", response_model=list[RuleOut])
async def list_rules(manager: ManagerDep) -> Any:
    return manager.alerts.list_rules()


@router.post(
    "/api/alert-rules",
    name="alerts.create_rule",
    status_code=status.HTTP_201_CREATED,
    response_model=RuleOut,
)
async def create_rule(body: RuleIn, manager: ManagerDep, user: CurrentUser) -> Any:
    """Threshold metrics (cpu_pct, mem_pct, disk_rd_bps, disk_wr_bps, net_rx_bps,
    net_tx_bps, guest_disk_pct) need `threshold`; event metrics (vm_crashed,
    host_unreachable, agent_unresponsive, schedule_failed) take none."""
    return manager.alerts.create_rule(RuleSpec(**body.model_dump()), created_by=user.username)


@router.get(RULE, name="alerts.get_rule", response_model=RuleOut)
async def get_rule(rule: str, manager: ManagerDep) -> Any:
    return manager.alerts.get_rule(rule)


@router.post(RULE + "/enable", name="alerts.enable_rule", response_model=RuleOut)
async def enable_rule(rule: str, manager: ManagerDep) -> Any:
    return manager.alerts.set_enabled(rule, True)


@router.post(RULE + "/disable", name="alerts.disable_rule", response_model=RuleOut)
async def disable_rule(rule: str, manager: ManagerDep) -> Any:
    return manager.alerts.set_enabled(rule, False)


@router.delete(RULE, name="alerts.delete_rule", status_code=status.HTTP_204_NO_CONTENT)
async def delete_rule(rule: str, manager: ManagerDep) -> Response:
    """Delete the rule and its alert history."""
    manager.alerts.delete_rule(rule)
    return no_content()


@router.get("/api/webhooks", name="webhooks.list", response_model=list[WebhookOut])
async def list_webhooks(manager: ManagerDep, _a: AdminUser) -> Any:
    return manager.webhooks.list()


@router.post(
    "/api/webhooks",
    name="webhooks.create",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
)
async def create_webhook(body: WebhookIn, manager: ManagerDep, _a: AdminUser) -> Any:
    """Alerts reaching `min_severity` are POSTed there as JSON, signed
    (`X-KVMM-Signature: sha256=HMAC(secret, "<X-KVMM-Timestamp>." + body)`)."""
    # In a thread: the check resolves the URL's host name (services/alerts/outbound.py).
    return await asyncio.to_thread(lambda: manager.webhooks.create(**body.model_dump()))


@router.get(HOOK, name="webhooks.get", response_model=WebhookOut)
async def get_webhook(webhook: str, manager: ManagerDep, _a: AdminUser) -> Any:
    return manager.webhooks.get(webhook)


@router.post(HOOK + "/enable", name="webhooks.enable", response_model=WebhookOut)
async def enable_webhook(webhook: str, manager: ManagerDep, _a: AdminUser) -> Any:
    return manager.webhooks.set_enabled(webhook, True)


@router.post(HOOK + "/disable", name="webhooks.disable", response_model=WebhookOut)
async def disable_webhook(webhook: str, manager: ManagerDep, _a: AdminUser) -> Any:
    return manager.webhooks.set_enabled(webhook, False)


@router.delete(HOOK, name="webhooks.delete", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(webhook: str, manager: ManagerDep, _a: AdminUser) -> Response:
    manager.webhooks.delete(webhook)
    return no_content()


@router.post(HOOK + "/ping", name="webhooks.ping", response_model=PingOut)
async def ping_webhook(webhook: str, manager: ManagerDep, _a: AdminUser) -> Any:
    """Queue a signed test delivery (`X-KVMM-Event: ping`); see its deliveries."""
    return {"delivery_id": manager.webhooks.ping(webhook)}


@router.get(HOOK + "/deliveries", name="webhooks.deliveries", response_model=list[DeliveryOut])
async def deliveries(
    webhook: str,
    *,
    limit: int = Query(50, description="newest first, 1-500"),
    manager: ManagerDep,
    _a: AdminUser,
) -> Any:
    return manager.webhooks.deliveries(webhook, limit)


@router.get("/api/email-targets", name="email.list", response_model=list[EmailTargetOut])
async def list_email(manager: ManagerDep, _a: AdminUser) -> Any:
    return manager.email.list()


@router.post(
    "/api/email-targets",
    name="email.create",
    status_code=status.HTTP_201_CREATED,
    response_model=EmailTargetOut,
)
async def create_email(body: EmailTargetIn, manager: ManagerDep, _a: AdminUser) -> Any:
    """Alerts reaching `min_severity` are mailed to `to_addrs` through this SMTP server."""
    return await asyncio.to_thread(manager.email.create, EmailSpec(**body.model_dump()))


@router.delete(
    "/api/email-targets/{target}", name="email.delete", status_code=status.HTTP_204_NO_CONTENT
)
async def delete_email(target: str, manager: ManagerDep, _a: AdminUser) -> Response:
    manager.email.delete(target)
    return no_content()


@router.post(
    "/api/email-targets/{target}/test", name="email.test", status_code=status.HTTP_204_NO_CONTENT
)
async def test_email(target: str, manager: ManagerDep, _a: AdminUser) -> Response:
    """Send a test message now (422 with the SMTP server's answer when it fails)."""
    await manager.email.test(target)
    return no_content()
