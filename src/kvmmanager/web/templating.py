"""Jinja2 environment, template filters and the common page context.

Autoescaping is on for every template: guest-supplied strings (hostnames, OS names,
command output) are always rendered as text. On top of that, every value a template
prints goes through the CLI's own rule (`core.sanitize.inert`): a bidi override, an
invisible mark, a line separator or a C0/C1 control is shown as its visible escape
(`\u202e`), so a guest or an anonymous client cannot reorder or hide what a page shows.
It is the environment's `finalize`, so no template can forget it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

import kvmmanager
from kvmmanager.core.errors import KvmmError
from kvmmanager.core.sanitize import inert
from kvmmanager.services.users import audit as audit_mod
from kvmmanager.services.users import ownership
from kvmmanager.services.users.service import Principal
from kvmmanager.services.vms import osinfo
from kvmmanager.web.vm_state import state_words

DASH = "\u2013"  # an en dash for "no value"
TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")

NAV = [
    ("dashboard", "/", "Dashboard"),
    ("vms", "/vms", "Virtual machines"),
    ("storage", "/storage", "Storage"),
    ("networks", "/networks", "Networks"),
    ("alerts", "/alerts", "Alerts"),
    ("schedules", "/schedules", "Schedules"),
    ("backups", "/backups", "Backups"),
    ("agent-iso", "/agent-iso", "Agent ISO"),
]
ADMIN_NAV = [("users", "/users", "Users"), ("audit", "/audit", "Audit log")]


def human_bytes(value: float | int | None) -> str:
    if value is None:
        return DASH
    n = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_duration(seconds: float | int | None) -> str:
    if seconds is None:
        return DASH
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {s}s"


def timestamp(value: float | datetime | None) -> str:
    if value is None:
        return DASH
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S")


def percent(used: float | None, total: float | None) -> int:
    if not used or not total:
        return 0
    return max(0, min(100, round(100 * used / total)))


def shown(value: Any) -> Any:
    """Every `{{ value }}` of every template: text made inert (newlines kept: a block of
    text stays a block), markup the code built itself left as it is."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return inert(value, multiline=True)
    return value


def json_attr(value: Any) -> str:
    # json.dumps leaves DEL raw; as \u007f it survives `shown` as valid JSON.
    return json.dumps(value).replace("\x7f", "\\u007f")


# Set before any template is compiled (finalize is compiled into each template).
TEMPLATES.env.finalize = shown
TEMPLATES.env.filters.update(
    bytes=human_bytes,
    kib=lambda v: human_bytes((v or 0) * 1024),
    duration=human_duration,
    ts=timestamp,
    tojson_attr=json_attr,
)


def os_name(os_id: str) -> str:
    """A domain's libosinfo OS id as a person reads it ("Debian 11"); the id itself when
    osinfo-db here does not know it."""
    found = osinfo.by_id(os_id)
    return found.name if found is not None else os_id


TEMPLATES.env.globals.update(
    percent=percent, version=kvmmanager.__version__, os_name=os_name, state_words=state_words
)


def principal(request: Request) -> Principal | None:
    return getattr(request.state, "principal", None)


def render(
    request: Request,
    template: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    user = principal(request)
    context.setdefault("active", "")
    if refused := form_errors(context):
        # A form answered again with its errors, whatever the status (the network form
        # re-renders its page with 200): its audit entry says it was refused, and why.
        audit_refusal("; ".join(refused))
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {
            "user": user,
            "csrf": user.csrf_token if user and user.csrf_token else "",
            "can_operate": bool(user and user.has_role("operator")),
            "is_admin": bool(user and user.has_role("admin")),
            "nav": NAV,
            "admin_nav": ADMIN_NAV,
            # Called by base.html only (the nav's badge), so fragments pay nothing.
            "firing_count": lambda: _firing_count(request),
            # Why the server would refuse this user an action on an owned object ("vm
            # 'x' belongs to 'y'"), or "": the page disables it with that reason.
            "owner_refusal": lambda kind, name, owner: _owner_refusal(user, kind, name, owner),
            **context,
        },
        status_code=status_code,
        headers=headers,
    )


def form_errors(context: dict[str, Any]) -> list[str]:
    """The messages of the field errors a page shows beside a form: `errors` and each
    editor's own `*_errors` ({field: message}, or {item: {field: message}}). A list is a
    page's notice that something could not be read, not a refused form."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, str) and value:
            found.append(value)

    for key, value in context.items():
        if (key == "errors" or key.endswith("_errors")) and isinstance(value, dict):
            walk(value)
    return found


def _owner_refusal(user: Principal | None, kind: str, name: str, owner: str | None) -> str:
    denied = ownership.refusal(user, kind, name, owner) if user is not None else None
    return denied.message if denied is not None else ""


def _firing_count(request: Request) -> int:
    manager = getattr(request.app.state, "manager", None)
    return manager.alerts.count_firing() if manager is not None else 0


def toast_headers(message: str, level: str = "ok") -> dict[str, str]:
    """An htmx trigger the page's script turns into a toast (message shown as text).

    Sent to the body, not to the element that asked: a live refresh may have replaced
    that element while the request ran (a device change updates the VM, which re-renders
    its tab), and an event on a detached element never reaches the page's listener."""
    shown_message = inert(message)  # the page shows it as text: no raw bidi or controls
    toast = {"message": shown_message, "level": level, "target": "body"}
    return {"HX-Trigger": json.dumps({"kvmm-toast": toast})}


FLASH_COOKIE = "kvmm_flash"
FLASH_MAX = 3000  # bytes of cookie value: far below a browser's 4 KiB cookie limit


def redirect_with_toasts(url: str, *toasts: tuple[str, str]) -> Response:
    """An htmx redirect whose toasts ((message, level), ...) survive it: they travel in a
    short-lived cookie that app.js shows (as text) and clears on the next page, because a
    toast triggered on the redirecting answer dies with the page it was shown on."""
    return _with_flash(Response(status_code=204, headers={"HX-Redirect": url}), toasts)


def refresh_with_toast(message: str, level: str = "ok") -> Response:
    """An htmx page refresh (HX-Refresh) whose toast survives it, in the flash cookie as
    redirect_with_toasts does: a toast on the refreshing answer itself was never seen."""
    return _with_flash(
        Response(status_code=204, headers={"HX-Refresh": "true"}), ((message, level),)
    )


def _with_flash(response: Response, toasts: tuple[tuple[str, str], ...]) -> Response:
    items = [{"message": m[:500], "level": level} for m, level in toasts]
    value = quote(json.dumps(items, separators=(",", ":")), safe="")
    if len(value) <= FLASH_MAX:
        # Readable by the page's script (not HttpOnly): it holds only the toast text.
        response.set_cookie(FLASH_COOKIE, value, max_age=60, path="/", samesite="strict")
    return response


def audit_target(target: str) -> None:
    """Names what a request acts on in its audit entry, where no path parameter does
    (the create form names its VM in its body)."""
    if (rec := audit_mod.current_request.get()) is not None:
        rec.target = target


def audit_refusal(reason: str, code: str = "invalid_input") -> None:
    """The audit entry of this request says it was refused, and why (as the user saw it)."""
    if (rec := audit_mod.current_request.get()) is not None:
        rec.refuse(reason, code)


def vm_gone_tab(request: Request, host: str) -> HTMLResponse:
    """A VM tab's live refresh after the VM was deleted: the page says so (vm_gone.js),
    where a 404 left the tab's forms in place and toasted the VM's UUID."""
    return render(request, "vms/_gone_tab.html", host=host)


def error_response(request: Request, exc: KvmmError) -> HTMLResponse:
    audit_refusal(exc.message, exc.code)
    if request.headers.get("hx-request"):
        # htmx swaps nothing on an error status; the toast carries libvirt's own message.
        return HTMLResponse("", status_code=exc.status, headers=toast_headers(exc.message, "error"))
    return render(request, "error.html", status_code=exc.status, error=exc)
