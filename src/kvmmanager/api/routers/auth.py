"""Login sessions: POST /api/auth/login, /logout, /password; GET /api/auth/me."""

from __future__ import annotations

import threading
import time
from collections import deque
from datetime import datetime

from fastapi import APIRouter, Depends, Request, Response, status

from kvmmanager.api.deps import (
    SESSION_COOKIE,
    current_user,
    get_manager,
    public,
    self_service,
)
from kvmmanager.api.schemas.auth import LoginRequest, LoginResponse, Me, PasswordChange
from kvmmanager.api.schemas.common import ERROR_RESPONSES
from kvmmanager.core.errors import InvalidInput, RateLimited, Unauthenticated
from kvmmanager.services import audit as audit_mod
from kvmmanager.services.manager import Manager
from kvmmanager.services.users import Principal

router = APIRouter(prefix="/api/auth", tags=["auth"], responses=ERROR_RESPONSES)

WINDOW_SECONDS = 60.0


class LoginRateLimiter:
    """Sliding one-minute window of login attempts per client address and per username."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._attempts: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, *keys: str) -> None:
        """Count one attempt under every key; raise RateLimited when any is over."""
        now = time.monotonic()
        with self._lock:
            for key in keys:
                q = self._attempts.setdefault(key, deque())
                while q and now - q[0] >= WINDOW_SECONDS:
                    q.popleft()
                if len(q) >= self.per_minute:
                    retry = max(1, int(WINDOW_SECONDS - (now - q[0])) + 1)
                    raise RateLimited(
                        f"too many login attempts; retry in {retry} s",
                        details={"retry_after": retry},
                    )
            for key in keys:
                self._attempts[key].append(now)
            if len(self._attempts) > 10_000:
                # Bound memory against address/username sprays: forget idle keys.
                for key in [k for k, q in self._attempts.items() if not q or now - q[-1] > 60]:
                    del self._attempts[key]


def _limiter(request: Request, manager: Manager) -> LoginRateLimiter:
    limiter = getattr(request.app.state, "login_limiter", None)
    if limiter is None:
        limiter = LoginRateLimiter(manager.settings.auth.login_attempts_per_minute)
        request.app.state.login_limiter = limiter
    return limiter


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
    manager: Manager = Depends(get_manager),
) -> LoginResponse:
    rec = audit_mod.current_request.get()
    if rec is not None:
        rec.username = body.username
    client = request.client.host if request.client else "unknown"
    _limiter(request, manager).hit(f"ip:{client}", f"user:{body.username}")
    principal = manager.users.authenticate(body.username, body.password)
    session_id, csrf, expires = manager.users.create_session(principal)
    _set_session_cookie(request, response, session_id, expires)
    return LoginResponse(
        username=principal.username, role=principal.role, csrf_token=csrf, expires_at=expires
    )


@router.post("/logout", name="auth.logout", status_code=status.HTTP_204_NO_CONTENT)
@self_service
def logout(
    request: Request,
    response: Response,
    _user: Principal = Depends(current_user),
    manager: Manager = Depends(get_manager),
) -> None:
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        manager.users.end_session(session_id)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


@router.get("/me", name="auth.me", response_model=Me)
def me(user: Principal = Depends(current_user)) -> Me:
    return Me(username=user.username, role=user.role, via=user.via, csrf_token=user.csrf_token)


@router.post("/password", name="auth.password", response_model=Me)
@self_service
def change_password(
    body: PasswordChange,
    request: Request,
    response: Response,
    user: Principal = Depends(current_user),
    manager: Manager = Depends(get_manager),
) -> Me:
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
