"""`kvm-manager alert ...`: alerts, alert rules and webhooks."""

from __future__ import annotations

import os

import typer

from kvmmanager.cli.helpers import act_and_say, api_get, api_post
from kvmmanager.cli.output import emit, info
from kvmmanager.cli.urls import q

NAME = "alert"
app = typer.Typer(help="Alerts, alert rules and webhooks.", no_args_is_help=True)
rule_app = typer.Typer(help="Alert rules.", no_args_is_help=True)
hook_app = typer.Typer(help="Webhooks (admin).", no_args_is_help=True)
email_app = typer.Typer(help="Alert e-mail through SMTP (admin).", no_args_is_help=True)
app.add_typer(rule_app, name="rule")
app.add_typer(hook_app, name="webhook")
app.add_typer(email_app, name="email")

ALERT_COLUMNS = ["id", "state", "severity", "rule_name", "host", "subject_name", "value",
                 "message", "fired_at", "resolved_at"]  # fmt: skip
# The id first: `alert rule enable/disable/remove` take it.
RULE_COLUMNS = ["id", "name", "metric", "op", "threshold", "samples", "severity", "host", "vm",
                "tag", "enabled"]  # fmt: skip
HOOK_COLUMNS = ["name", "url", "min_severity", "enabled"]
DELIVERY_COLUMNS = ["id", "event", "state", "attempts", "last_status", "last_error", "created_at"]


@app.command("list")
def list_alerts(
    ctx: typer.Context,
    state: str | None = typer.Option(None, "--state", help="firing or resolved."),
    rule: str | None = typer.Option(None, "--rule"),
    limit: int = typer.Option(100, "--limit", "-n"),
) -> None:
    """Alerts, newest first."""
    params: dict[str, object] = {"limit": limit}
    if state:
        params["state"] = state
    if rule:
        params["rule"] = rule
    emit(ctx, api_get(ctx, "/api/alerts", params=params), ALERT_COLUMNS)


@rule_app.command("list")
def list_rules(ctx: typer.Context) -> None:
    emit(ctx, api_get(ctx, "/api/alert-rules"), RULE_COLUMNS)


@rule_app.command("add")
def add_rule(
    ctx: typer.Context,
    name: str,
    metric: str = typer.Argument(
        ...,
        help="cpu_pct, mem_pct, disk_rd_bps, disk_wr_bps, net_rx_bps, net_tx_bps, "
        "guest_disk_pct, vm_crashed, host_unreachable, agent_unresponsive, schedule_failed.",
    ),
    threshold: float | None = typer.Option(None, "--threshold", "-t"),
    op: str = typer.Option(">", "--op", help=">, >=, < or <=."),
    samples: int = typer.Option(1, "--samples", "-s", help="Consecutive samples."),
    severity: str = typer.Option("warning", "--severity", help="info, warning, critical."),
    host: str | None = typer.Option(
        None,
        "--host",
        "-H",
        help="Only this host's VMs; with --vm, the VM's host (default: $KVMM_HOST or local).",
    ),
    vm: str | None = typer.Option(None, "--vm"),
    tag: str | None = typer.Option(None, "--tag"),
) -> None:
    """Add a rule, e.g. `alert rule add hot-cpu cpu_pct -t 90 -s 3 --severity critical`."""
    if vm is not None and host is None:
        # A VM is named on a host, as in every other command; without --vm the rule
        # covers every host.
        host = os.environ.get("KVMM_HOST") or "local"
    body = {
        "name": name, "metric": metric, "threshold": threshold, "op": op, "samples": samples,
        "severity": severity, "host": host, "vm": vm, "tag": tag,
    }  # fmt: skip
    emit(ctx, api_post(ctx, "/api/alert-rules", body))


@rule_app.command("enable")
def enable_rule(ctx: typer.Context, rule: str) -> None:
    act_and_say(ctx, "POST", f"/api/alert-rules/{q(rule)}/enable", f"rule {rule} enabled")


@rule_app.command("disable")
def disable_rule(ctx: typer.Context, rule: str) -> None:
    act_and_say(ctx, "POST", f"/api/alert-rules/{q(rule)}/disable", f"rule {rule} disabled")


@rule_app.command("remove")
def remove_rule(ctx: typer.Context, rule: str) -> None:
    """Delete a rule and its alert history."""
    act_and_say(ctx, "DELETE", f"/api/alert-rules/{q(rule)}", f"rule {rule} removed")


@hook_app.command("list")
def list_hooks(ctx: typer.Context) -> None:
    emit(ctx, api_get(ctx, "/api/webhooks"), HOOK_COLUMNS)


@hook_app.command("add")
def add_hook(
    ctx: typer.Context,
    name: str,
    url: str,
    secret: str | None = typer.Option(
        None, "--secret", envvar="KVMM_WEBHOOK_SECRET", help="Default: generated, shown once."
    ),
    min_severity: str = typer.Option("info", "--min-severity"),
) -> None:
    """Send alerts to URL as signed JSON POSTs; prints the shared secret once."""
    body = {"name": name, "url": url, "secret": secret, "min_severity": min_severity}
    emit(ctx, api_post(ctx, "/api/webhooks", body))


@hook_app.command("ping")
def ping_hook(ctx: typer.Context, webhook: str) -> None:
    """Send a signed test delivery; `alert webhook deliveries` shows how it went."""
    res = api_post(ctx, f"/api/webhooks/{q(webhook)}/ping")
    info(f"test delivery {res['delivery_id']} queued")


@hook_app.command("deliveries")
def list_deliveries(
    ctx: typer.Context, webhook: str, limit: int = typer.Option(20, "--limit", "-n")
) -> None:
    data = api_get(ctx, f"/api/webhooks/{q(webhook)}/deliveries", params={"limit": limit})
    emit(ctx, data, DELIVERY_COLUMNS)


@hook_app.command("remove")
def remove_hook(ctx: typer.Context, webhook: str) -> None:
    act_and_say(ctx, "DELETE", f"/api/webhooks/{q(webhook)}", f"webhook {webhook} removed")


@email_app.command("list")
def list_email(ctx: typer.Context) -> None:
    data = api_get(ctx, "/api/email-targets")
    emit(ctx, data, ["name", "smtp_host", "smtp_port", "security", "to_addrs", "min_severity"])


@email_app.command("add")
def add_email(
    ctx: typer.Context,
    name: str,
    smtp_host: str,
    to: list[str] = typer.Option(..., "--to", help="Recipient (repeat)."),
    from_addr: str = typer.Option(..., "--from", help="Sender address."),
    port: int = typer.Option(587, "--port"),
    security: str = typer.Option("starttls", "--security", help="none, starttls or tls."),
    username: str | None = typer.Option(None, "--username"),
    password: str | None = typer.Option(None, "--password", envvar="KVMM_SMTP_PASSWORD"),
    min_severity: str = typer.Option("warning", "--min-severity"),
) -> None:
    """Mail alerts of at least --min-severity to the --to addresses."""
    body = {
        "name": name, "smtp_host": smtp_host, "smtp_port": port, "security": security,
        "username": username, "password": password, "from_addr": from_addr,
        "to_addrs": to, "min_severity": min_severity,
    }  # fmt: skip
    emit(ctx, api_post(ctx, "/api/email-targets", body))


@email_app.command("test")
def test_email(ctx: typer.Context, target: str) -> None:
    """Send a test message through the target now."""
    act_and_say(
        ctx, "POST", f"/api/email-targets/{q(target)}/test", f"test e-mail sent through {target}"
    )


@email_app.command("remove")
def remove_email(ctx: typer.Context, target: str) -> None:
    act_and_say(ctx, "DELETE", f"/api/email-targets/{q(target)}", f"e-mail target {target} removed")
