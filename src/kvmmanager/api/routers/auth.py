"""Login sessions: POST /api/auth/login, /logout, /password; GET /api/auth/me."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response, status
from starlette.requests import HTTPConnection

from kvmmanager.api.deps import (
    SESSION_COOKIE,
    CurrentUser,
    ManagerDep,
    password_change,
    public,
    require_same_origin,
    self_service,
)
from kvmmanager.api.schemas.auth import LoginRequest, LoginResponse, Me, PasswordChange
from kvmmanager.api.schemas.common import ERROR_RESPONSES
from kvmmanager.core.errors import InvalidInput, Unauthenticated
from kvmmanager.services.manager import Manager
from kvmmanager.services.users import audit as audit_mod
from kvmmanager.services.users.login_throttle import LoginThrottle
from kvmmanager.services.users.service import Principal

router = APIRouter(prefix="/api/auth", tags=["auth"], responses=ERROR_RESPONSES)

# Responses that carry a session, a CSRF token or a secret must not be kept by a cache.
NO_STORE = {"Cache-Control": "no-store"}


def login_throttle(conn: HTTPConnection, manager: Manager) -> LoginThrottle:
    """The app's one throttle (services/users/login_throttle.py), made on first use."""
    throttle = getattr(conn.app.state, "login_throttle", None)
    if throttle is None:
        auth = manager.settings.auth
        throttle = LoginThrottle(
            auth.login_attempts_per_minute, auth.login_free_failures, auth.login_backoff_max_seconds
        )
        conn.app.state.login_throttle = throttle
    return throttle


def client_address(conn: HTTPConnection) -> str:
    """The client's address: the forwarded one when a trusted proxy sent the request."""
    return conn.client.host if conn.client else "unknown"


def check_login(conn: HTTPConnection, manager: Manager, username: str, password: str) -> Principal:
    """A login attempt, throttled per address and per (user, address)."""
    throttle = login_throttle(conn, manager)
    address = client_address(conn)
    throttle.check(username, address)
    try:
        principal = manager.users.authenticate(username, password)
    except Unauthenticated:
        throttle.failed(username, address)
        raise
    throttle.succeeded(username, address)
    return principal


def _set_session_cookie(
    request: Request, response: Response, session_id: str, expires: datetime
) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        expires=expires,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


@router.post("/login", name="auth.login", response_model=LoginResponse)
@public
def login(
    body: LoginRequest,
    request: Request,
    response: Response,
    manager: ManagerDep,
) -> LoginResponse:
    response.headers.update(NO_STORE)
    rec = audit_mod.current_request.get()
    if rec is not None:
        rec.username = body.username
    # Login CSRF: a cross-site page must not log a browser into an account of its choosing.
    require_same_origin(request, manager.settings.server.base_url)
    principal = check_login(request, manager, body.username, body.password)
    session_id, csrf, expires = manager.users.create_session(principal)
    _set_session_cookie(request, response, session_id, expires)
    return LoginResponse(
        username=principal.username,
        role=principal.role,
        csrf_token=csrf,
        expires_at=expires,
        password_change_required=principal.must_change_password,
    )


@router.post("/logout", name="auth.logout", status_code=status.HTTP_204_NO_CONTENT)
@self_service
@password_change
def logout(
    request: Request,
    response: Response,
    _user: CurrentUser,
    manager: ManagerDep,
) -> None:
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        manager.users.end_session(session_id)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


@router.get("/me", name="auth.me", response_model=Me)
@password_change
def me(response: Response, user: CurrentUser) -> Me:
    response.headers.update(NO_STORE)  # carries the CSRF token
    return Me(username=user.username, role=user.role, via=user.via, csrf_token=user.csrf_token)


@router.post("/password", name="auth.password", response_model=Me)
@self_service
@password_change
def change_password(
    body: PasswordChange,
    request: Request,
    response: Response,
    user: CurrentUser,
    manager: ManagerDep,
) -> Me:
    response.headers.update(NO_STORE)
    try:
        manager.users.authenticate(user.username, body.current_password)
    except Unauthenticated:
        raise InvalidInput("current password is wrong", field="current_password") from None
    try:
        manager.users.set_password(user.username, body.new_password)
    except InvalidInput as e:
        raise InvalidInput(e.message, field="new_password") from None
    csrf = None
    if user.via == "session":
        # The change ended every session of this user; keep the one that made it.
        session_id, csrf, expires = manager.users.create_session(user)
        _set_session_cookie(request, response, session_id, expires)
    return Me(username=user.username, role=user.role, via=user.via, csrf_token=csrf)
