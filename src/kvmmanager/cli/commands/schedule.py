"""`kvm-manager schedule ...`: scheduled operations (start, shutdown, reboot, destroy,
snapshot) once, daily, weekly, monthly or by cron, in a time zone."""

from __future__ import annotations

from typing import Any

import typer

from kvmmanager.cli.api_client import client
from kvmmanager.cli.helpers import act_and_say, api_get, api_post, vm_target
from kvmmanager.cli.output import emit, info, wants_json
from kvmmanager.cli.urls import q
from kvmmanager.core.errors import InvalidInput

NAME = "schedule"
app = typer.Typer(help="Scheduled operations on VMs.", no_args_is_help=True)

COLUMNS = ["name", "action", "when", "timezone", "targets", "enabled", "next_run_at",
           "last_status"]  # fmt: skip
RUN_COLUMNS = ["due_at", "status", "missed", "message"]
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _weekdays(text: str) -> list[int]:
    out = []
    for part in text.lower().split(","):
        part = part.strip()
        if part in DAYS:
            out.append(DAYS.index(part))
        elif part.isdigit() and int(part) <= 6:
            out.append(int(part))
        else:
            raise InvalidInput("--weekdays: mon,tue,... or 0-6 (0 = Monday)", field="--weekdays")
    return out


def _when(s: dict[str, Any]) -> str:
    kind = s["kind"]
    if kind == "once":
        return f"once {s['run_at']}"
    if kind == "cron":
        return f"cron {s['cron']}"
    if kind == "weekly":
        return f"weekly {','.join(DAYS[d] for d in s['weekdays'])} {s['at_time']}"
    if kind == "monthly":
        return f"monthly day {s['day_of_month']} {s['at_time']}"
    return f"daily {s['at_time']}"


def _row(s: dict[str, Any]) -> dict[str, Any]:
    targets = [f"{t['host']}/{t['vm']}" for t in s["vms"]]
    if s.get("policy"):
        targets.append(f"policy:{s['policy']}")
    if s["tag"]:
        targets.append(f"tag:{s['tag']}" + (f"@{s['host']}" if s["host"] else ""))
    return {**s, "when": _when(s), "targets": targets}


@app.command("list")
def list_schedules(ctx: typer.Context) -> None:
    """List schedules with their next run and last result."""
    data = api_get(ctx, "/api/schedules")
    emit(ctx, data if wants_json(ctx) else [_row(s) for s in data], COLUMNS)


@app.command("add")
def add(
    ctx: typer.Context,
    name: str,
    action: str = typer.Argument(
        ..., help="start, shutdown, reboot, destroy, snapshot or backup (with --policy)."
    ),
    vms: list[str] = typer.Argument(None, help="VMs as NAME or HOST/NAME."),
    tag: str | None = typer.Option(None, "--tag", "-t", help="Also every VM with this tag."),
    host: str | None = typer.Option(None, "--host", "-H", help="Limit --tag to one host."),
    kind: str = typer.Option(..., "--kind", "-k", help="once, daily, weekly, monthly, cron."),
    at: str | None = typer.Option(None, "--at", help="HH:MM local time (daily/weekly/monthly)."),
    run_at: str | None = typer.Option(None, "--run-at", help="once: ISO 8601 date and time."),
    weekdays: str | None = typer.Option(None, "--weekdays", help="weekly: mon,wed,... or 0-6."),
    day: int | None = typer.Option(None, "--day", help="monthly: day of month (1-31)."),
    cron: str | None = typer.Option(None, "--cron", help="cron: 5-field expression."),
    tz: str = typer.Option("UTC", "--tz", help="IANA time zone, e.g. Europe/Berlin."),
    missed: str = typer.Option("run", "--missed", help="run or skip a missed occurrence."),
    mode: str = typer.Option("auto", "--mode", help="shutdown: acpi, agent or auto."),
    snapshot_prefix: str | None = typer.Option(None, "--snapshot-prefix"),
    policy: str | None = typer.Option(None, "--policy", help="backup: the backup policy."),
    disabled: bool = typer.Option(False, "--disabled", help="Create it disabled."),
) -> None:
    """Create a schedule, e.g. `schedule add nightly snapshot --tag prod --kind daily
    --at 02:30 --tz Europe/Berlin`."""
    body = {
        "name": name,
        "action": action,
        "vms": [vm_target(v) for v in vms or []],
        "tag": tag,
        "host": host,
        "kind": kind,
        "run_at": run_at,
        "at_time": at,
        "weekdays": _weekdays(weekdays) if weekdays else None,
        "day_of_month": day,
        "cron": cron,
        "timezone": tz,
        "missed_policy": missed,
        "mode": mode,
        "snapshot_prefix": snapshot_prefix,
        "policy": policy,
        "enabled": not disabled,
    }
    emit(ctx, api_post(ctx, "/api/schedules", body))


@app.command("show")
def show(ctx: typer.Context, schedule: str) -> None:
    """Show one schedule (by name or id)."""
    emit(ctx, api_get(ctx, f"/api/schedules/{q(schedule)}"))


@app.command("runs")
def runs(
    ctx: typer.Context,
    schedule: str,
    limit: int = typer.Option(20, "--limit", "-n", help="Newest first."),
) -> None:
    """The schedule's recent runs: when, how it ended, whether it was a missed one."""
    with client(ctx) as api:
        emit(ctx, api.get(f"/api/schedules/{q(schedule)}/runs", params={"limit": limit}),
             RUN_COLUMNS)  # fmt: skip


@app.command("enable")
def enable(ctx: typer.Context, schedule: str) -> None:
    """Enable a schedule (what it missed while disabled is not caught up)."""
    s = api_post(ctx, f"/api/schedules/{q(schedule)}/enable")
    info(f"schedule {s['name']} enabled; next run {s['next_run_at']}")


@app.command("disable")
def disable(ctx: typer.Context, schedule: str) -> None:
    s = api_post(ctx, f"/api/schedules/{q(schedule)}/disable")
    info(f"schedule {s['name']} disabled")


@app.command("remove")
def remove(ctx: typer.Context, schedule: str) -> None:
    """Delete a schedule and its run history."""
    act_and_say(ctx, "DELETE", f"/api/schedules/{q(schedule)}", f"schedule {schedule} removed")
