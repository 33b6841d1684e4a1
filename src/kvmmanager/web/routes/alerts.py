"""Alerts page: rules (create, edit, enable/disable, delete), firing alerts and history
(refreshed live by `alert.firing` / `alert.resolved` events), the firing-count badge of
the navigation, and, for admins, outgoing webhooks (add, test-send, deliveries, delete)
and e-mail targets (SMTP settings shown without their password; add, test-send, delete).
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from kvmmanager.api.deps import (
    AdminUser,
    CurrentUser,
    ManagerDep,
)
from kvmmanager.core.errors import Conflict, InvalidInput
from kvmmanager.db.ops_models import ALERT_METRICS, SEVERITIES
from kvmmanager.services.alerts.email import SECURITY, EmailSpec
from kvmmanager.services.alerts.evaluation import OPS
from kvmmanager.services.alerts.service import EVENT_METRICS, THRESHOLD_METRICS, RuleSpec
from kvmmanager.services.manager import Manager
from kvmmanager.web.routes._forms import (
    EditorPage,
    FormState,
    form_of,
    host_choices,
    number,
    tag_choices,
    text,
    toggle_or_delete,
    vm_choices,
)
from kvmmanager.web.templating import principal, render, toast_headers

router = APIRouter(include_in_schema=False)
EDITOR = EditorPage(
    "/alerts", "ops/alerts.html", "ops/_rule_form.html", "alerts", checkboxes=("enabled",)
)
HISTORY = 50
METRIC_LABELS = {
    "cpu_pct": "CPU %",
    "mem_pct": "Memory %",
    "disk_rd_bps": "Disk read B/s",
    "disk_wr_bps": "Disk write B/s",
    "net_rx_bps": "Network receive B/s",
    "net_tx_bps": "Network transmit B/s",
    "guest_disk_pct": "Guest disk usage % (agent)",
    "vm_crashed": "VM stopped unexpectedly",
    "host_unreachable": "Host unreachable",
    "agent_unresponsive": "Agent unresponsive",
    "schedule_failed": "Scheduled run failed",
}


def _rule_form(rule: dict[str, Any] | None) -> dict[str, Any]:
    """A rule as the form's field values."""
    if rule is None:
        return {"metric": "cpu_pct", "op": ">", "samples": 3, "severity": "warning",
                "scope": "global", "enabled": True}  # fmt: skip
    scope = "vm" if rule["vm"] else ("tag" if rule["tag"] else "global")
    return {
        **rule,
        "scope": scope,
        "target": f"{rule['host']}/{rule['vm']}" if rule["vm"] else "",
        "threshold": "" if rule["threshold"] is None else f"{rule['threshold']:g}",
    }


def _spec(form: Any) -> RuleSpec:
    scope = text(form, "scope") or "global"
    host = vm = tag = None
    if scope == "vm":
        target = text(form, "target")
        if target is None or "/" not in target:
            raise InvalidInput("pick the VM the rule is for", field="target")
        host, _, vm = target.partition("/")
    elif scope == "tag":
        tag = text(form, "tag")
        if tag is None:
            raise InvalidInput("name the tag the rule is for", field="tag")
        host = text(form, "host")
    elif scope == "global":
        host = text(form, "host")
    else:
        raise InvalidInput("scope must be global, vm or tag", field="scope")
    return RuleSpec(
        name=text(form, "name") or "",
        metric=text(form, "metric") or "",
        threshold=number(form, "threshold"),
        op=text(form, "op") or ">",
        samples=number(form, "samples", int, 1),
        severity=text(form, "severity") or "warning",
        host=host,
        vm=vm,
        tag=tag,
        enabled=form.get("enabled") is not None,
    )


def _page(request: Request, manager: Manager, state: FormState | None = None) -> HTMLResponse:
    user = principal(request)
    admin = bool(user and user.has_role("admin"))
    return EDITOR.render(
        request,
        state or FormState(_rule_form(None)),
        rules=manager.alerts.list_rules(),
        firing=manager.alerts.list_alerts(state="firing", limit=1000),
        history=manager.alerts.list_alerts(limit=HISTORY),
        webhooks=manager.webhooks.list() if admin else [],
        hook_form={"min_severity": "warning"},
        hook_errors={},
        created=None,
        **(_email_context(manager) if admin else {"email_targets": []}),
        **_choices(manager),
    )


def _choices(manager: Manager) -> dict[str, Any]:
    return {
        "metrics": ALERT_METRICS,
        "metric_labels": METRIC_LABELS,
        "threshold_metrics": THRESHOLD_METRICS,
        "event_metrics": EVENT_METRICS,
        "ops": list(OPS),
        "severities": SEVERITIES,
        "vm_choices": vm_choices(manager),
        "tag_choices": tag_choices(manager),
        "host_choices": host_choices(manager),
        "interval": manager.settings.metrics.interval_seconds,
    }


# The editors' page routes (alerts, backups, schedules) stay alike on purpose: FastAPI reads
# each route's own signature; what they do alike lives in _forms.EditorPage.
@router.get("/alerts", name="web.alerts", response_class=HTMLResponse)
def alerts_page(
    request: Request,
    *,
    edit: str | None = None,
    manager: ManagerDep,
    _user: CurrentUser,
) -> HTMLResponse:
    state = FormState(_rule_form(manager.alerts.get_rule(edit)), editing=edit) if edit else None
    return _page(request, manager, state)


@router.get("/alerts/live", name="web.alerts_live", response_class=HTMLResponse)
def alerts_live(request: Request, manager: ManagerDep) -> HTMLResponse:
    """Firing alerts and the history, re-fetched on every alert event."""
    return render(
        request,
        "ops/_alerts_live.html",
        firing=manager.alerts.list_alerts(state="firing", limit=1000),
        history=manager.alerts.list_alerts(limit=HISTORY),
    )


@router.get("/alerts/badge", name="web.alerts_badge", response_class=HTMLResponse)
def alerts_badge(request: Request, manager: ManagerDep) -> HTMLResponse:
    return render(request, "ops/_firing_badge.html", firing_count=manager.alerts.count_firing)


@router.post("/alerts/rules", name="web.alert_rule_create", response_class=HTMLResponse)
async def create_rule(
    request: Request,
    manager: ManagerDep,
    user: CurrentUser,
) -> Response:
    def save(form: FormData) -> str:
        rule = manager.alerts.create_rule(_spec(form), created_by=user.username)
        return f"Alert rule {rule['name']} created"

    return await EDITOR.submit(request, save, partial(_page, request, manager))


@router.post("/alerts/rules/{rule}", name="web.alert_rule_update", response_class=HTMLResponse)
async def update_rule(request: Request, rule: str, manager: ManagerDep) -> Response:
    manager.alerts.get_rule(rule)  # 404 for an unknown rule, not a form error

    def save(form: FormData) -> str:
        return f"Alert rule {manager.alerts.update_rule(rule, _spec(form))['name']} saved"

    return await EDITOR.submit(request, save, partial(_page, request, manager), editing=rule)


@router.post("/alerts/rules/{rule}/{action}", name="web.alert_rule_action")
def rule_action(rule: str, action: str, manager: ManagerDep) -> Response:
    return toggle_or_delete(
        f"Alert rule {rule}",
        action,
        partial(manager.alerts.set_enabled, rule),
        partial(manager.alerts.delete_rule, rule),
    )


# ---- webhooks (admin) --------------------------------------------------------------------


def _webhooks(
    request: Request,
    manager: Manager,
    errors: dict[str, str] | None = None,
    form: dict[str, Any] | None = None,
    created: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    return render(
        request,
        "ops/_webhooks.html",
        status_code=422 if errors else 200,
        headers=headers,
        webhooks=manager.webhooks.list(),
        severities=SEVERITIES,
        hook_form=form or {"min_severity": "warning"},
        hook_errors=errors or {},
        created=created,
    )


@router.post("/alerts/webhooks", name="web.webhook_create", response_class=HTMLResponse)
async def create_webhook(
    request: Request,
    manager: ManagerDep,
    _admin: AdminUser,
) -> HTMLResponse:
    form = await form_of(request)
    try:
        # In a thread: the check resolves the URL's host name (services/alerts/outbound.py).
        created = await asyncio.to_thread(
            manager.webhooks.create,
            name=text(form, "name") or "",
            url=text(form, "url") or "",
            secret=text(form, "secret"),
            min_severity=text(form, "min_severity") or "info",
        )
    except (InvalidInput, Conflict) as exc:
        values = {k: v for k, v in form.items() if k != "secret" and isinstance(v, str)}
        return _webhooks(request, manager, errors={exc.field or "form": exc.message}, form=values)
    return _webhooks(request, manager, created=created)


@router.post(
    "/alerts/webhooks/{webhook}/{action}",
    name="web.webhook_action",
    response_class=HTMLResponse,
)
async def webhook_action(
    request: Request,
    webhook: str,
    action: str,
    manager: ManagerDep,
    _admin: AdminUser,
) -> HTMLResponse:
    if action in ("enable", "disable"):
        manager.webhooks.set_enabled(webhook, action == "enable")
        message = f"Webhook {webhook}: {action}d"
    elif action == "delete":
        manager.webhooks.delete(webhook)
        message = f"Webhook {webhook} deleted"
    elif action == "ping":
        delivery = manager.webhooks.ping(webhook)
        message = f"Test delivery {delivery} queued to {webhook}; see its deliveries"
    else:
        raise InvalidInput("action must be enable, disable, delete or ping", field="action")
    return _webhooks(request, manager, headers=toast_headers(message))


@router.get(
    "/alerts/webhooks/{webhook}/deliveries",
    name="web.webhook_deliveries",
    response_class=HTMLResponse,
)
def webhook_deliveries(
    request: Request,
    webhook: str,
    manager: ManagerDep,
    _admin: AdminUser,
) -> HTMLResponse:
    hook = manager.webhooks.get(webhook)
    rows = manager.webhooks.deliveries(webhook, 20)
    return render(request, "ops/_deliveries.html", hook=hook, deliveries=rows)


# ---- e-mail targets (admin) ----------------------------------------------------------------


def _email_context(
    manager: Manager,
    errors: dict[str, str] | None = None,
    form: dict[str, Any] | None = None,
    result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "email_targets": manager.email.list(),
        "email_security": SECURITY,
        "email_form": form or {},
        "email_errors": errors or {},
        "email_result": result,
    }


def _email_section(
    request: Request, manager: Manager, headers: dict[str, str] | None = None, **kw: Any
) -> HTMLResponse:
    return render(
        request,
        "ops/_email_targets.html",
        status_code=422 if kw.get("errors") else 200,
        headers=headers,
        severities=SEVERITIES,
        **_email_context(manager, **kw),
    )


def _email_spec(form: Any) -> EmailSpec:
    raw = text(form, "to_addrs") or ""
    return EmailSpec(
        name=text(form, "name") or "",
        smtp_host=text(form, "smtp_host") or "",
        smtp_port=number(form, "smtp_port", int, 587),
        security=text(form, "security") or "starttls",
        username=text(form, "username"),
        # An empty password box with a login is the service's "both or neither" error.
        password=form.get("password") or None,
        from_addr=text(form, "from_addr") or "",
        to_addrs=[a for a in raw.replace(",", " ").split() if a],
        min_severity=text(form, "min_severity") or "warning",
    )


@router.post("/alerts/email", name="web.email_create", response_class=HTMLResponse)
async def create_email(
    request: Request,
    manager: ManagerDep,
    _admin: AdminUser,
) -> HTMLResponse:
    form = await form_of(request)
    try:
        created = await asyncio.to_thread(manager.email.create, _email_spec(form))
    except (InvalidInput, Conflict) as exc:
        values = {k: v for k, v in form.items() if k != "password" and isinstance(v, str)}
        return _email_section(
            request, manager, errors={exc.field or "form": exc.message}, form=values
        )
    return _email_section(
        request, manager, headers=toast_headers(f"E-mail target {created['name']} added")
    )


@router.post("/alerts/email/{target}/delete", name="web.email_delete", response_class=HTMLResponse)
def delete_email(
    request: Request,
    target: str,
    manager: ManagerDep,
    _admin: AdminUser,
) -> HTMLResponse:
    manager.email.delete(target)
    return _email_section(
        request, manager, headers=toast_headers(f"E-mail target {target} deleted")
    )


@router.post("/alerts/email/{target}/test", name="web.email_test", response_class=HTMLResponse)
async def test_email(
    request: Request,
    target: str,
    manager: ManagerDep,
    _admin: AdminUser,
) -> HTMLResponse:
    """Send a test message now and say what the SMTP server answered (in the section, so
    the reason stays on screen, and as a toast)."""
    try:
        await manager.email.test(target)
    except InvalidInput as exc:
        message = f"Test e-mail through {target} failed: {exc.message}"
        return _email_section(
            request,
            manager,
            headers=toast_headers(message, "error"),
            result={"ok": False, "message": message},
        )
    message = f"Test e-mail sent through {target}"
    return _email_section(
        request, manager, headers=toast_headers(message), result={"ok": True, "message": message}
    )
