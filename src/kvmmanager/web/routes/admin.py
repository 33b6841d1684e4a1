"""Administration pages: users, API tokens and the audit log."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from kvmmanager.api.deps import (
    AdminUser,
    CurrentUser,
    ManagerDep,
    self_service,
)
from kvmmanager.core.errors import InvalidInput, KvmmError, PermissionDenied
from kvmmanager.services.manager import Manager
from kvmmanager.web.templating import audit_refusal, refresh_with_toast, render

router = APIRouter(include_in_schema=False)


def _users_page(
    request: Request, manager: Manager, error: str = "", created: str = "", status_code: int = 200
) -> HTMLResponse:
    return render(
        request,
        "admin/users.html",
        status_code=status_code,
        active="users",
        users=manager.users.list(),
        tokens=manager.users.list_tokens(),
        error=error,
        created=created,
    )


@router.get("/users", name="web.users", response_class=HTMLResponse)
def users(
    request: Request,
    manager: ManagerDep,
    _admin: AdminUser,
) -> HTMLResponse:
    return _users_page(request, manager)


@router.post("/users", name="web.user_create", response_class=HTMLResponse)
def create_user(
    request: Request,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    *,
    role: Annotated[str, Form()] = "viewer",
    manager: ManagerDep,
    _admin: AdminUser,
) -> HTMLResponse:
    try:
        manager.users.create(username, password, role)
    except InvalidInput as e:
        # The page shows the refusal above its table: its audit entry says so too.
        audit_refusal(e.message, e.code)
        return _users_page(request, manager, error=e.message)
    return _users_page(request, manager)


@router.post("/users/{username}", name="web.user_update", response_class=HTMLResponse)
def update_user(
    request: Request,
    username: str,
    action: Annotated[str, Form()],
    *,
    role: Annotated[str | None, Form()] = None,
    manager: ManagerDep,
    _admin: AdminUser,
) -> Response:
    if action == "role":
        manager.users.update(username, role=role)
    elif action in ("disable", "enable"):
        manager.users.update(username, disabled=action == "disable")
    elif action == "delete":
        manager.users.delete(username)
    else:
        raise InvalidInput(f"unknown user action {action!r}", field="action")
    return refresh_with_toast(f"user {username}: {action} done")


@router.post("/tokens", name="web.token_create", response_class=HTMLResponse)
@self_service
def create_token(
    request: Request,
    name: Annotated[str, Form()],
    manager: ManagerDep,
    user: CurrentUser,
) -> HTMLResponse:
    _token, secret = manager.users.create_token(user.username, name)
    return render(request, "admin/_token_created.html", name=name, secret=secret)


@router.post("/tokens/{token_id}/revoke", name="web.token_revoke")
@self_service
def revoke_token(
    token_id: int,
    manager: ManagerDep,
    user: CurrentUser,
) -> Response:
    _token, owner = manager.users.get_token(token_id)
    if owner != user.username and not user.has_role("admin"):
        raise PermissionDenied("you may revoke only your own tokens")
    manager.users.revoke_token(token_id)
    return refresh_with_toast("Token revoked")


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInput(f"not a date: {value!r}", field="since") from None


_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_NAMED = re.compile(rf" \(({_UUID})\)")  # "web1 (3f2a...)": the name the entry recorded
_BARE = re.compile(rf"^([^/]+)/({_UUID})(?=/|$)")  # "local/3f2a...": no name recorded


def shown_target(manager: Manager, target: str) -> str:
    """An entry's target as a person reads it: VMs by name. The UUID the entry recorded
    beside a name is left to the cell's tooltip; a bare UUID of a VM the inventory still
    knows is shown as that VM's name."""
    target = _NAMED.sub("", target)
    bare = _BARE.match(target)
    if bare:
        with contextlib.suppress(KvmmError):
            name = manager.inventory.domain(bare.group(1), bare.group(2)).name
            target = f"{bare.group(1)}/{name}{target[bare.end() :]}"
    return target


@router.get("/audit", name="web.audit", response_class=HTMLResponse)
def audit(
    request: Request,
    *,
    user: str | None = None,
    action: str | None = None,
    target: str | None = None,
    result: str | None = None,
    since: str | None = None,
    page: int = 0,
    manager: ManagerDep,
    _admin: AdminUser,
) -> HTMLResponse:
    limit = 50
    entries = manager.audit.query(
        user=user or None,
        action=action or None,
        target=target or None,
        result=result or None,
        since=_date(since),
        limit=limit,
        offset=max(page, 0) * limit,
    )
    filters = {
        "user": user or "",
        "action": action or "",
        "target": target or "",
        "result": result or "",
        "since": since or "",
    }
    return render(
        request,
        "admin/audit.html",
        active="audit",
        entries=entries,
        target_of=lambda target: shown_target(manager, target),
        filters=filters,
        page=max(page, 0),
        pages=(entries.total + limit - 1) // limit,
    )
