"""Schedules page: the schedules with their next run (in each schedule's own time zone)
and last result, create / edit with errors shown by field, enable/disable, delete, and
each schedule's run history. `schedule.run` events refresh the list live."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from kvmmanager.api.deps import CurrentUser, ManagerDep
from kvmmanager.core.errors import Conflict, InvalidInput, NotFound
from kvmmanager.services.automation.schedules import ScheduleSpec
from kvmmanager.services.manager import Manager
from kvmmanager.web.routes._forms import (
    TIMEZONES,
    EditorPage,
    FormState,
    host_choices,
    local_time,
    number,
    tag_choices,
    text,
    toggle_or_delete,
    vm_choices,
    vm_targets,
)
from kvmmanager.web.templating import render

router = APIRouter(include_in_schema=False)
EDITOR = EditorPage(
    "/schedules",
    "ops/schedules.html",
    "ops/_schedule_form.html",
    "schedules",
    lists=("vms", "weekdays"),
    checkboxes=("enabled",),
)
ACTIONS = {
    "start": "Start",
    "shutdown": "Shut down",
    "reboot": "Reboot",
    "destroy": "Force off",
    "snapshot": "Snapshot",
    "backup": "Run a backup policy",
}
KINDS = {"once": "Once", "daily": "Daily", "weekly": "Weekly", "monthly": "Monthly",
         "cron": "Cron expression"}  # fmt: skip
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# Which of the form's "when" fields each kind sends (the service refuses the others).
KIND_FIELDS = {
    "once": ("run_at",),
    "daily": ("at_time",),
    "weekly": ("at_time", "weekdays"),
    "monthly": ("at_time", "day_of_month"),
    "cron": ("cron",),
}


def when_text(s: dict[str, Any]) -> str:
    """A schedule's timetable in words, in its own zone."""
    kind = s["kind"]
    if kind == "once":
        return f"once at {local_time(s['run_at'], s['timezone'])}"
    if kind == "daily":
        return f"daily at {s['at_time']}"
    if kind == "weekly":
        days = ", ".join(WEEKDAYS[d] for d in s["weekdays"] or [])
        return f"weekly on {days} at {s['at_time']}"
    if kind == "monthly":
        return f"monthly on day {s['day_of_month']} at {s['at_time']}"
    return f"cron {s['cron']}"


def _view(s: dict[str, Any]) -> dict[str, Any]:
    return {
        **s,
        "when": when_text(s),
        "next_local": local_time(s["next_run_at"], s["timezone"]),
        "last_local": local_time(s["last_run_at"], s["timezone"]),
    }


def _spec(form: Any) -> ScheduleSpec:
    kind = text(form, "kind") or ""
    if kind not in KIND_FIELDS:
        raise InvalidInput("pick how often it runs", field="kind")
    action = text(form, "action") or ""
    values: dict[str, Any] = {
        "name": text(form, "name") or "",
        "action": action,
        "kind": kind,
        "timezone": text(form, "timezone") or "UTC",
        "missed_policy": text(form, "missed_policy") or "run",
        "enabled": form.get("enabled") is not None,
    }
    if action == "backup":
        values["policy"] = text(form, "policy")
    else:
        values["vms"] = vm_targets(form.getlist("vms"))
        values["tag"] = text(form, "tag")
        values["host"] = text(form, "host")
        if action == "shutdown":
            values["mode"] = text(form, "mode") or "auto"
        if action == "snapshot":
            values["snapshot_prefix"] = text(form, "snapshot_prefix")
    fields = KIND_FIELDS[kind]
    if "run_at" in fields:
        values["run_at"] = text(form, "run_at")
    if "at_time" in fields:
        values["at_time"] = text(form, "at_time")
    if "weekdays" in fields:
        values["weekdays"] = [_weekday(v) for v in form.getlist("weekdays")]
    if "day_of_month" in fields:
        values["day_of_month"] = number(form, "day_of_month", int)
    if "cron" in fields:
        values["cron"] = text(form, "cron")
    try:
        return ScheduleSpec(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "form"
        raise InvalidInput(f"{field}: {first['msg']}", field=field) from None


def _weekday(value: Any) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"not a weekday: {value!r}", field="weekdays") from None


def _form_values(s: dict[str, Any] | None) -> dict[str, Any]:
    if s is None:
        return {"action": "snapshot", "kind": "daily", "at_time": "02:00", "timezone": "UTC",
                "missed_policy": "run", "enabled": True, "vms": [], "weekdays": []}  # fmt: skip
    run_at = ""
    if s["run_at"] is not None:
        run_at = local_time(s["run_at"], s["timezone"])[:16].replace(" ", "T")
    return {
        **s,
        "vms": [f"{t['host']}/{t['vm']}" for t in s["vms"]],
        "run_at": run_at,
        "weekdays": [str(d) for d in s["weekdays"] or []],
    }


def _context(manager: Manager) -> dict[str, Any]:
    return {
        "actions": ACTIONS,
        "kinds": KINDS,
        "weekday_names": WEEKDAYS,
        "timezones": TIMEZONES,
        "vm_choices": vm_choices(manager),
        "tag_choices": tag_choices(manager),
        "host_choices": host_choices(manager),
        "policies": [p["name"] for p in manager.backups.list()],
    }


def _page(request: Request, manager: Manager, state: FormState | None = None) -> HTMLResponse:
    return EDITOR.render(
        request,
        state or FormState(_form_values(None)),
        schedules=[_view(s) for s in manager.schedules.list()],
        **_context(manager),
    )


@router.get("/schedules", name="web.schedules", response_class=HTMLResponse)
def schedules_page(
    request: Request,
    *,
    edit: str | None = None,
    manager: ManagerDep,
    _user: CurrentUser,
) -> HTMLResponse:
    state = FormState(_form_values(manager.schedules.get(edit)), editing=edit) if edit else None
    return _page(request, manager, state)


@router.get("/schedules/rows", name="web.schedule_rows", response_class=HTMLResponse)
def schedule_rows(request: Request, manager: ManagerDep) -> HTMLResponse:
    return render(
        request,
        "ops/_schedule_rows.html",
        schedules=[_view(s) for s in manager.schedules.list()],
        actions=ACTIONS,
    )


@router.get("/schedules/{schedule}/runs", name="web.schedule_runs", response_class=HTMLResponse)
def schedule_runs(request: Request, schedule: str, manager: ManagerDep) -> HTMLResponse:
    s = manager.schedules.get(schedule)
    runs = manager.schedules.runs(schedule, 50)
    for r in runs:
        for key in ("due_at", "started_at", "finished_at"):
            r[f"{key}_local"] = local_time(r[key], s["timezone"])
    return render(request, "ops/_schedule_runs.html", schedule=s, runs=runs)


# NotFound is a form error here: the backup policy a schedule names.
REFUSALS = (InvalidInput, Conflict, NotFound)


@router.post("/schedules", name="web.schedule_create", response_class=HTMLResponse)
async def create_schedule(
    request: Request,
    manager: ManagerDep,
    user: CurrentUser,
) -> Response:
    def save(form: FormData) -> str:
        out = manager.schedules.create(_spec(form), created_by=user.username)
        return f"Schedule {out['name']} created; next run {_view(out)['next_local']}"

    return await EDITOR.submit(request, save, partial(_page, request, manager), refusals=REFUSALS)


@router.post("/schedules/{schedule}", name="web.schedule_update", response_class=HTMLResponse)
async def update_schedule(
    request: Request,
    schedule: str,
    manager: ManagerDep,
    user: CurrentUser,
) -> Response:
    manager.schedules.get(schedule)  # 404 for an unknown schedule, not a form error

    def save(form: FormData) -> str:
        return (
            f"Schedule {manager.schedules.replace(schedule, _spec(form), actor=user)['name']} saved"
        )

    show = partial(_page, request, manager)
    return await EDITOR.submit(request, save, show, editing=schedule, refusals=REFUSALS)


@router.post("/schedules/{schedule}/{action}", name="web.schedule_action")
async def schedule_action(schedule: str, action: str, manager: ManagerDep) -> Response:
    return toggle_or_delete(
        f"Schedule {schedule}",
        action,
        partial(manager.schedules.set_enabled, schedule),
        partial(manager.schedules.delete, schedule),
    )
