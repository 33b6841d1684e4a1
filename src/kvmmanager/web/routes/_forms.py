"""Form helpers shared by the operations pages (alerts, schedules, backups, batch).

The services validate; these only turn browser form text into the typed values the
services take, raising InvalidInput naming the form field so the page can show the
message next to it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from kvmmanager.core.errors import Conflict, InvalidInput, KvmmError
from kvmmanager.services.manager import Manager
from kvmmanager.web.templating import redirect_with_toasts, refresh_with_toast, render


async def form_of(request: Request) -> FormData:
    return await request.form()


def text(form: FormData, name: str) -> str | None:
    """A trimmed text field; empty means not given."""
    value = form.get(name)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def number(form: FormData, name: str, kind: type = float, default: Any = None) -> Any:
    raw = text(form, name)
    if raw is None:
        return default
    try:
        return kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise InvalidInput(f"{name} must be {what}, not {raw!r}", field=name) from None


def vm_targets(values: Iterable[Any], field: str = "vms") -> list[dict[str, str]]:
    """`host/vm` option values -> [{"host", "vm"}]."""
    out = []
    for item in values:
        host, sep, vm = str(item).partition("/")
        if not sep or not host or not vm:
            raise InvalidInput(f"pick VMs from the list (got {item!r})", field=field)
        out.append({"host": host, "vm": vm})
    return out


def vm_choices(manager: Manager) -> list[dict[str, str]]:
    """Every VM the inventory knows, for target pickers: value `host/name`."""
    vms = sorted(manager.inventory.domains(), key=lambda d: (d.host, d.name.lower()))
    return [{"value": f"{d.host}/{d.name}", "label": f"{d.name} ({d.host})"} for d in vms]


def tag_choices(manager: Manager) -> list[str]:
    return sorted({t for d in manager.inventory.domains() for t in d.tags})


def host_choices(manager: Manager) -> list[str]:
    return [h.name for h in manager.registry.all()]


TIMEZONES = sorted(available_timezones())


def local_time(value: Any, tz: str) -> str:
    """An aware UTC datetime shown in the IANA zone `tz`, with the zone's abbreviation."""
    if value is None:
        return ""
    try:
        return value.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z")
    except (ValueError, KeyError):
        return value.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class FormState:
    """What an editor's form shows: the field values, the errors by field and the item
    being edited (None: a new one). `refused` answers a save the service turned down."""

    values: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)
    editing: str | None = None
    refused: bool = False


@dataclass(frozen=True)
class EditorPage:
    """What the operations editors (alerts, backups, schedules) do alike around their own
    page: it is rendered with the form's state beside the page's own context; a save
    returns to `path` with a toast; a refused form is shown again in its partial
    `form_template`, with what the user typed and the error next to its field."""

    path: str
    page_template: str
    form_template: str
    # The navigation entry the page lights up.
    active: str
    # Multi-select fields, kept as lists when the form is shown again.
    lists: tuple[str, ...] = ()
    # Checkboxes: present in the form means ticked.
    checkboxes: tuple[str, ...] = ()

    def render(self, request: Request, state: FormState, **context: Any) -> HTMLResponse:
        return render(
            request,
            self.form_template if state.refused else self.page_template,
            # The form swaps a refusal in anyway (data-form-errors, app.js).
            status_code=422 if state.refused else 200,
            active=self.active,
            form=state.values,
            errors=state.errors,
            editing=state.editing,
            **context,
        )

    def saved(self, message: str) -> Response:
        return redirect_with_toasts(self.path, (message, "ok"))

    def refused(self, form: FormData, exc: KvmmError, editing: str | None) -> FormState:
        """The form shown again with `exc` next to its field and what the user typed."""
        values: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
        for name in self.lists:
            values[name] = form.getlist(name)
        for name in self.checkboxes:
            values[name] = form.get(name) is not None
        return FormState(values, {exc.field or "form": exc.message}, editing, refused=True)

    async def submit(
        self,
        request: Request,
        save: Callable[[FormData], str],
        show: Callable[[FormState], HTMLResponse | Awaitable[HTMLResponse]],
        *,
        editing: str | None = None,
        refusals: tuple[type[KvmmError], ...] = (InvalidInput, Conflict),
    ) -> Response:
        """Create or update from the posted form: `save` returns the toast of a save;
        an error of `refusals` (bad input, a name taken...) shows the form again."""
        form = await form_of(request)
        try:
            message = save(form)
        except refusals as exc:
            page = show(self.refused(form, exc, editing))
            return await page if isinstance(page, Awaitable) else page
        return self.saved(message)


def toggle_or_delete(
    label: str,
    action: str,
    set_enabled: Callable[[bool], object],
    delete: Callable[[], object],
) -> Response:
    """The enable / disable / delete buttons of an editor's row (alert rules, schedules)."""
    if action in ("enable", "disable"):
        set_enabled(action == "enable")
    elif action == "delete":
        delete()
    else:
        raise InvalidInput("action must be enable, disable or delete", field="action")
    return refresh_with_toast(f"{label}: {action} done")
