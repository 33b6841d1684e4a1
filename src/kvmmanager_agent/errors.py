"""The one exception the agent's methods raise: it becomes a JSON-RPC error reply."""

from __future__ import annotations

from . import protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Optional


class AgentError(Exception):
    def __init__(self, code: int, message: str, field: Optional[str] = None) -> None:
        Exception.__init__(self, message)
        self.code = code
        self.message = message
        self.field = field

    def to_error(self) -> Dict[str, Any]:
        err: Dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            err["data"] = {"field": self.field}
        return err


def failed(message: str, field: Optional[str] = None) -> AgentError:
    return AgentError(protocol.COMMAND_FAILED, message, field)


def denied(message: str, field: Optional[str] = None) -> AgentError:
    return AgentError(protocol.PERMISSION_DENIED, message, field)


def not_found(message: str, field: Optional[str] = None) -> AgentError:
    return AgentError(protocol.NOT_FOUND, message, field)


def invalid(message: str, field: Optional[str] = None) -> AgentError:
    return AgentError(protocol.INVALID_PARAMS, message, field)
