"""Login, logout and the user's own account page."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kvmmanager.api.deps import (
    SESSION_COOKIE,
    CurrentUser,
    ManagerDep,
    password_change,
    public,
    same_origin,
    self_service,
)
from kvmmanager.api.routers.auth import NO_STORE, _set_session_cookie, check_login
from kvmmanager.core.errors import InvalidInput, RateLimited, Unauthenticated
from kvmmanager.services.users import audit as audit_mod
from kvmmanager.web.templating import redirect_with_toasts, render

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    """Only same-site paths: an open redirect would let a link send users anywhere."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


@router.get("/login", name="web.login_page", response_class=HTMLResponse)
@public
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    response = render(request, "login.html", next=_safe_next(next))
    response.headers.update(NO_STORE)
    return response


@router.post("/login", name="web.login", response_class=HTMLResponse)
@public
def login(
    request: Request,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    *,
    next: Annotated[str, Form()] = "/",
    manager: ManagerDep,
) -> Response:
    rec = audit_mod.current_request.get()
    if rec is not None:
        rec.username = username
    if not same_origin(request, manager.settings.server.base_url):
        # Login CSRF: a cross-site form must not log the browser into the attacker's account.
        return render(
            request,
            "login.html",
            status_code=403,
            message="cross-site login refused: log in from this server's own login page",
            next=next,
            username=username,
        )
    try:
        principal = check_login(request, manager, username, password)
    except (Unauthenticated, RateLimited) as e:
        return render(
            request,
            "login.html",
            status_code=e.status,
            message=e.message,
            next=next,
            username=username,
        )
    session_id, _csrf, expires = manager.users.create_session(principal)
    # A generated password (the first admin's) is changed before anything else.
    target = "/account" if principal.must_change_password else _safe_next(next)
    response = RedirectResponse(target, status_code=303, headers=NO_STORE)
    _set_session_cookie(request, response, session_id, expires)
    return response


@router.post("/logout", name="web.logout")
@self_service
@password_change
def logout(
    request: Request,
    _user: CurrentUser,
    manager: ManagerDep,
) -> Response:
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        manager.users.end_session(session_id)
    response = Response(status_code=204, headers={"HX-Redirect": "/login"})
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/account", name="web.account", response_class=HTMLResponse)
@password_change
def account(request: Request, user: CurrentUser) -> HTMLResponse:
    return render(request, "account.html", active="account")


@router.post("/account/password", name="web.account_password", response_class=HTMLResponse)
@self_service
@password_change
def change_password(
    request: Request,
    current_password: Annotated[str, Form()],
    new_password: Annotated[str, Form()],
    user: CurrentUser,
    manager: ManagerDep,
) -> Response:
    try:
        manager.users.authenticate(user.username, current_password)
    except Unauthenticated:
        raise InvalidInput("current password is wrong", field="current_password") from None
    manager.users.set_password(user.username, new_password)
    # Changing the password ended every session, this one included: log in again.
    # The toast rides the flash cookie: one on this answer dies with the page it leaves.
    return redirect_with_toasts("/login", ("Password changed; log in with the new one", "ok"))
