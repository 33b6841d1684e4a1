"""The product's error vocabulary, shared by every layer.

Each error has a stable machine code, an HTTP status the API maps it to, a human message
and optionally the input field it is about. Lower layers raise these; the API turns them
into the one JSON error shape and the CLI into one line on stderr plus an exit code.
"""

from __future__ import annotations

from typing import Any


class KvmmError(Exception):
    code = "internal_error"
    status = 500
    exit_code = 1

    def __init__(self, message: str, *, field: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.details is not None:
            body["details"] = self.details
        return body


class InvalidInput(KvmmError):
    """The caller sent something that can never work (bad name, absurd size...)."""

    code = "invalid_input"
    status = 422
    exit_code = 2


class PasswordChangeRequired(KvmmError):
    """The caller logged in with a password that must be changed before anything else
    (the generated first admin password)."""

    code = "password_change_required"
    status = 403
    exit_code = 3


class NotFound(KvmmError):
    code = "not_found"
    status = 404
    exit_code = 4


class Conflict(KvmmError):
    """The object exists but is in the wrong state for this operation, or already exists."""

    code = "conflict"
    status = 409
    exit_code = 5


class Unsupported(KvmmError):
    """The host, its hypervisor or the disk format cannot do this; the message says why."""

    code = "unsupported"
    status = 422
    exit_code = 2


class HostUnavailable(KvmmError):
    code = "host_unavailable"
    status = 503
    exit_code = 6


class AgentUnavailable(KvmmError):
    code = "agent_unavailable"
    status = 503
    exit_code = 6


class GuestError(KvmmError):
    """The guest agent answered with an error; details carry its JSON-RPC code."""

    code = "guest_error"
    status = 502
    exit_code = 7


class LibvirtRefused(KvmmError):
    """libvirt failed a call with an error no other class fits (its "internal error",
    often QEMU's or a helper's refusal passed on): a failure of the hypervisor behind the
    manager, not of the manager, so a 502 with libvirt's words rather than a 500."""

    code = "libvirt_error"
    status = 502
    exit_code = 1


class Timeout(KvmmError):
    code = "timeout"
    status = 504
    exit_code = 8


class HostTimeout(Timeout):
    """A libvirt call passed its deadline. libvirt may still carry it out: the message
    says so, so nobody retries a create blindly."""

    code = "host_timeout"


class Unauthenticated(KvmmError):
    code = "unauthenticated"
    status = 401
    exit_code = 9


class PermissionDenied(KvmmError):
    code = "forbidden"
    status = 403
    exit_code = 9


class Cancelled(KvmmError):
    code = "cancelled"
    status = 409
    exit_code = 10


class RateLimited(KvmmError):
    code = "rate_limited"
    status = 429
    exit_code = 11
