"""Request dependencies: the Manager, who is calling, and what they may do.

Authentication is applied app-wide (`authenticate`, added to every route by create_app):
a route is private unless its endpoint is marked `@public`. Writes (POST/PUT/PATCH/DELETE)
need at least `operator` unless the endpoint is marked `@self_service` (a viewer acting on
their own account: logout, own password, own tokens). Use `require_role("admin")` for more.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

from fastapi import Depends, Response, status
from starlette.requests import HTTPConnection

from kvmmanager.core import security
from kvmmanager.core.errors import (
    KvmmError,
    NotFound,
    PasswordChangeRequired,
    PermissionDenied,
    Unauthenticated,
)
from kvmmanager.services.manager import Manager
from kvmmanager.services.users import audit as audit_mod
from kvmmanager.services.users import ownership
from kvmmanager.services.users.service import ROLE_RANK, Principal

SESSION_COOKIE = "kvmm_session"
CSRF_HEADER = "X-CSRF-Token"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PUBLIC = "__kvmm_public__"
_SELF_SERVICE = "__kvmm_self_service__"
_PASSWORD_CHANGE = "__kvmm_password_change__"  # noqa: S105 (a marker name)
_STREAMING_BODY = "__kvmm_streaming_body__"
_OWNER_READ = "__kvmm_owner_read__"
_LARGE_BODY_ROUTE = "__kvmm_large_body_route__"

F = TypeVar("F", bound=Callable[..., Any])


def public(fn: F) -> F:
    """Mark an endpoint as reachable without authentication (login, health)."""
    setattr(fn, _PUBLIC, True)
    return fn


def self_service(fn: F) -> F:
    """Mark a write endpoint a viewer may call, because it only touches their own account."""
    setattr(fn, _SELF_SERVICE, True)
    return fn


def streaming_body(fn: F) -> F:
    """Mark an endpoint that streams its body itself, with limits of its own (uploads):
    the JSON body limit (api/body_limits.py) does not apply to it."""
    setattr(fn, _STREAMING_BODY, True)
    return fn


def is_streaming_body(route: Any) -> bool:
    return bool(getattr(getattr(route, "endpoint", None), _STREAMING_BODY, False))


def large_body_route(where: str) -> Callable[[F], F]:
    """Name the streaming route that takes what this JSON route refuses for size, so the
    413 of the body limit tells the caller where large content goes instead."""

    def mark(fn: F) -> F:
        setattr(fn, _LARGE_BODY_ROUTE, where)
        return fn

    return mark


def large_body_route_of(route: Any) -> str | None:
    where = getattr(getattr(route, "endpoint", None), _LARGE_BODY_ROUTE, None)
    return where if isinstance(where, str) else None


def owner_read(fn: F) -> F:
    """Mark a read endpoint whose answer carries an owned object's data (a volume's
    bytes): its path objects are held to the ownership rule like a write's."""
    setattr(fn, _OWNER_READ, True)
    return fn


def is_owner_read(route: Any) -> bool:
    return bool(getattr(getattr(route, "endpoint", None), _OWNER_READ, False))


def password_change(fn: F) -> F:
    """Mark an endpoint a login that must change its password may still reach (the
    change itself, who am I, logout, the account page)."""
    setattr(fn, _PASSWORD_CHANGE, True)
    return fn


def is_public(route: Any) -> bool:
    return bool(getattr(getattr(route, "endpoint", None), _PUBLIC, False))


def is_self_service(route: Any) -> bool:
    return bool(getattr(getattr(route, "endpoint", None), _SELF_SERVICE, False))


def route_action(route: Any) -> str:
    """The audit action of a route: its name when dotted, else `<router module>.<name>`."""
    name = getattr(route, "name", "") or ""
    if "." in name:
        return name
    module = getattr(getattr(route, "endpoint", None), "__module__", "") or ""
    return f"{module.rsplit('.', 1)[-1]}.{name}" if module else name


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def readable_target(conn: HTTPConnection) -> str:
    """The audit target of a request: its path parameters, a VM named by UUID shown by its
    name with the UUID beside it (`local/web1 (3f2a...)`), so the log reads without a
    lookup."""
    params = {k: str(v) for k, v in conn.path_params.items()}
    host, vm = params.get("host"), params.get("vm")
    if host is not None and vm is not None and _UUID.fullmatch(vm):
        with contextlib.suppress(KvmmError):
            params["vm"] = f"{get_manager(conn).inventory.domain(host, vm).name} ({vm})"
    return "/".join(params.values())


def same_origin(conn: HTTPConnection, base_url: str = "") -> bool:
    """Whether a browser request comes from a page of this server: its Origin (else its
    Referer) names the Host it was sent to, or the configured public base URL. A request
    with neither header is not from a browser page (browsers send Origin on every
    cross-site POST) and passes."""
    source = conn.headers.get("origin") or conn.headers.get("referer")
    if source is None:
        return True
    netloc = urlsplit(source).netloc if source != "null" else ""
    allowed = {conn.headers.get("host")}
    if base_url:
        allowed.add(urlsplit(base_url).netloc)
    return bool(netloc) and netloc in allowed


def require_same_origin(conn: HTTPConnection, base_url: str = "") -> None:
    if not same_origin(conn, base_url):
        raise PermissionDenied("cross-site request refused", field="Origin")


def get_manager(conn: HTTPConnection) -> Manager:
    return conn.app.state.manager


def _principal_from_request(conn: HTTPConnection, manager: Manager) -> Principal:
    auth = conn.headers.get("authorization")
    if auth:
        scheme, _, secret = auth.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthenticated("Authorization header must be 'Bearer <token>'")
        return manager.users.principal_for_token(secret.strip())
    session_id = conn.cookies.get(SESSION_COOKIE)
    if session_id:
        principal = manager.users.principal_for_session(session_id)
        if conn.scope["type"] == "websocket":
            # Browsers send cookies on cross-site WebSocket handshakes that carry no CSRF
            # header: insist the page that opened it came from this server.
            origin = conn.headers.get("origin")
            if origin and urlsplit(origin).netloc != conn.headers.get("host"):
                raise PermissionDenied("cross-origin WebSocket refused", field="Origin")
            return principal
        method = conn.scope.get("method")
        # SameSite=Strict already stops most cross-site writes; the header stops the rest.
        if method in WRITE_METHODS and not security.constant_time_equal(
            conn.headers.get(CSRF_HEADER), principal.csrf_token
        ):
            # The session is valid: the refused write is this user's, not an anonymous one.
            if (rec := audit_mod.current_request.get()) is not None:
                rec.username = principal.username
            raise PermissionDenied(f"missing or wrong {CSRF_HEADER} header", field=CSRF_HEADER)
        return principal
    raise Unauthenticated("authentication required (session cookie or bearer token)")


def authenticate(conn: HTTPConnection) -> Principal | None:
    """App-wide: identify the caller, enforce the default role rules, label the audit entry."""
    route = conn.scope.get("route")
    rec = audit_mod.current_request.get()
    if rec is not None and route is not None:
        rec.action = route_action(route)
        rec.target = readable_target(conn)
    if route is not None and is_public(route):
        return None
    cached = getattr(conn.state, "principal", None)
    if cached is not None:
        return cached
    principal = _principal_from_request(conn, get_manager(conn))
    conn.state.principal = principal
    if rec is not None:
        rec.username = principal.username
    if principal.must_change_password and not getattr(
        getattr(route, "endpoint", None), _PASSWORD_CHANGE, False
    ):
        raise PasswordChangeRequired(
            f"the password of {principal.username!r} was generated and must be changed "
            "before anything else: POST /api/auth/password (web UI: the account page; "
            "CLI: kvm-manager login)"
        )
    method = conn.scope.get("method")
    if (
        method in WRITE_METHODS
        and not principal.has_role("operator")
        and not (route is not None and is_self_service(route))
    ):
        raise PermissionDenied(f"role {principal.role!r} may not change anything")
    check_path_owners(conn, principal, write=method in WRITE_METHODS or is_owner_read(route))
    return principal


def check_vm_owner(conn: HTTPConnection, principal: Principal) -> None:
    """Per-VM ownership: a VM with an owner (kept in its domain metadata) may be changed by
    that user and by admins only; a VM without an owner is shared by all operators.
    Applies to every write and console under /hosts/{host}/vms/{vm}, whichever router."""
    host, vm = conn.path_params.get("host"), conn.path_params.get("vm")
    if host is None or vm is None:
        return
    get_manager(conn).ownership.check_vm(principal, str(host), str(vm))


def check_path_owners(conn: HTTPConnection, principal: Principal, *, write: bool) -> None:
    """The ownership rule (services/ownership.may_act) for every owned object a route's
    path names, whichever router (API or web UI): VMs, volumes, schedules and backup
    policies on writes (and volumes on `@owner_read` downloads); jobs and export bundles
    on every call, since their detail and their file are the owner's data (another
    user's job reads as 404, as if it did not exist). Unknown objects pass: the route
    answers 404 itself."""
    if principal.has_role("admin"):
        return
    params = conn.path_params
    m = get_manager(conn)
    own = m.ownership
    if (job_id := params.get("job_id")) is not None:
        try:
            job = m.jobs.get(str(job_id))
        except KvmmError:
            job = None
        if job is not None and not ownership.may_act(principal, job.created_by):
            if not write:
                # Reading: as if it did not exist (its target and result are private).
                raise NotFound(f"no job {job.id}", field="job_id")
            ownership.check(principal, "job", job.id, job.created_by)
    if (bundle_id := params.get("bundle_id")) is not None:
        own.check_bundle(principal, str(bundle_id))
    if not write:
        return
    check_vm_owner(conn, principal)
    host, pool, vol = params.get("host"), params.get("pool"), params.get("vol")
    if host is not None and pool is not None and vol is not None:
        own.check_volume(principal, str(host), str(pool), str(vol))
    if (schedule := params.get("schedule")) is not None:
        with contextlib.suppress(NotFound):
            s = m.schedules.get(str(schedule))
            ownership.check(principal, "schedule", s["name"], s["created_by"])
    if (policy := params.get("policy")) is not None:
        with contextlib.suppress(NotFound):
            p = m.backups.get(str(policy))
            ownership.check(principal, "policy", p["name"], p["created_by"])


def current_user(conn: HTTPConnection) -> Principal:
    principal = getattr(conn.state, "principal", None)
    if principal is None:
        principal = _principal_from_request(conn, get_manager(conn))
        conn.state.principal = principal
    return principal


def require_role(role: str) -> Callable[..., Principal]:
    """A dependency returning the caller when their role is at least `role`."""
    if role not in ROLE_RANK:
        raise ValueError(f"unknown role {role!r}")

    def dependency(principal: Principal = Depends(current_user)) -> Principal:
        if not principal.has_role(role):
            raise PermissionDenied(f"this needs the {role} role (you are {principal.role})")
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency


# The dependencies a route declares, written once (as FastAPI's full-stack template does):
# `manager: ManagerDep`, `user: CurrentUser`, `user: AdminUser`.
ManagerDep = Annotated[Manager, Depends(get_manager)]
CurrentUser = Annotated[Principal, Depends(current_user)]
# The caller, refused unless their role is at least admin / operator.
_require_admin = require_role("admin")
AdminUser = Annotated[Principal, Depends(_require_admin)]
OperatorUser = Annotated[Principal, Depends(require_role("operator"))]
# A route (or router) only admins reach, when it has no use for the caller.
ADMIN_ONLY = [Depends(_require_admin)]


def no_content() -> Response:
    """What a DELETE answers: 204, no body."""
    return Response(status_code=status.HTTP_204_NO_CONTENT)
