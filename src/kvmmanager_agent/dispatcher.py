"""JSON-RPC 2.0 semantics: parse a line, validate, dispatch from the protocol registry.

Nothing a host sends can raise out of here: every failure becomes an error reply (or,
for a notification, nothing). Handlers get validated parameters and return a result
dict, or a (result, action) pair whose action runs after the reply is written (power).
"""

from __future__ import annotations

import base64

from . import jsonwire, protocol
from .errors import AgentError
from .framing import Binary
from .log import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

    Action = Callable[[], None]


_NO_ID = object()


def error_reply(
    req_id: Any, code: int, message: str, field: Optional[str] = None
) -> Dict[str, Any]:
    err: Dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        err["data"] = {"field": field}
    return {"jsonrpc": "2.0", "id": req_id, "error": err}


# Key of the raw bytes a result carries after its reply line (file_read_chunk `binary`):
# not a string, so never a JSON key, and taken out before the reply is encoded.
RAW_REPLY = object()


def _raw_of(reply: Any) -> Any:
    result = reply.get("result") if isinstance(reply, dict) else None
    return result.pop(RAW_REPLY, None) if isinstance(result, dict) else None


def encode(reply: Any) -> bytes:
    """The reply's line; a result's raw bytes (RAW_REPLY) follow it, in the same write."""
    raw = _raw_of(reply)
    # ASCII output: lone surrogates from odd filenames stay escapes, never invalid UTF-8.
    try:
        line = jsonwire.dumps(reply).encode("ascii") + b"\n"
        return line if raw is None else line + bytes(raw)
    except ValueError:
        # A non-finite number in a result (the encoder refuses NaN/Infinity: RFC 8259
        # has no such values). Never seen on valid input; the reply stays JSON anyway.
        log.error("a reply held a non-finite number; sent an internal error instead")
        err = error_reply(None, protocol.INTERNAL_ERROR, "reply was not representable as JSON")
        return jsonwire.dumps(err).encode("ascii") + b"\n"


def _finite(value: float) -> bool:
    return value - value == 0  # false for inf, -inf and nan


def valid_id(value: Any) -> bool:
    """A JSON-RPC id the agent can echo: null, a string or a finite number."""
    if value is None or isinstance(value, str):
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not isinstance(value, float) or _finite(value)


def _all_finite(value: Any) -> bool:
    """False when a float inside `value` is NaN or infinite (JSON's NaN, 1e999)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not _finite(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


# Key of a request's raw payload (framing.Binary) in its parsed dict, and of the bytes
# in a handler's params: neither can come from JSON (an object key is a string, and
# unknown parameter names are refused).
RAW = object()
PAYLOAD = "@payload"


def parse(line: Any) -> Tuple[Any, Optional[Dict[str, Any]]]:
    """Return (payload, None) or (None, parse-error reply). `line` is bytes or a Binary."""
    raw = None
    if isinstance(line, Binary):
        line, raw = line.line, line.data
    try:
        text = line.decode("utf-8")
        payload = jsonwire.loads(text)
    except Exception as exc:
        # Broad on purpose: whatever a parser of whichever Python raises on a hostile
        # line (ValueError, RecursionError, MemoryError, a SystemError of a C scanner)
        # is this host's parse error, never the end of the agent.
        msg = "parse error: %s" % (str(exc)[:200],)
        return None, error_reply(None, protocol.PARSE_ERROR, msg)
    if raw is not None and isinstance(payload, dict):
        payload[RAW] = raw
    return payload, None


class Dispatcher:
    def __init__(self, ctx: Any, handlers: Mapping[str, Callable[..., Any]]) -> None:
        self.ctx = ctx
        self.handlers = handlers

    def run(self, payload: Any) -> Tuple[Any, List[Action]]:
        """Answer a parsed payload: a reply dict, a list (batch), or None (notifications)."""
        actions: List[Action] = []
        if isinstance(payload, list):
            if not payload:
                return error_reply(None, protocol.INVALID_REQUEST, "empty batch"), actions
            if len(payload) > protocol.MAX_BATCH:
                msg = "batch too large (maximum %d)" % protocol.MAX_BATCH
                return error_reply(None, protocol.INVALID_REQUEST, msg), actions
            replies = []
            for item in payload:
                reply = self.run_one(item, actions)
                if reply is not None:
                    raw = _raw_of(reply)
                    if raw is not None:
                        # In a batch the bytes go as base64: one line answers them all.
                        result = reply["result"]
                        del result["binary_length"]
                        result["data"] = base64.b64encode(raw).decode("ascii")
                    replies.append(reply)
            return (replies or None), actions
        return self.run_one(payload, actions), actions

    def run_one(self, req: Any, actions: List[Action]) -> Optional[Dict[str, Any]]:
        if not isinstance(req, dict):
            return error_reply(None, protocol.INVALID_REQUEST, "request must be an object")
        req_id = req.get("id", _NO_ID)
        if req_id is not _NO_ID and not valid_id(req_id):
            return error_reply(
                None, protocol.INVALID_REQUEST, "id must be a string, finite number or null"
            )
        reply_id = None if req_id is _NO_ID else req_id
        method_name = req.get("method")
        if req.get("jsonrpc") != "2.0" or not isinstance(method_name, str):
            msg = "not a JSON-RPC 2.0 request (jsonrpc '2.0' and a string method are required)"
            return error_reply(reply_id, protocol.INVALID_REQUEST, msg)
        if "params" in req and not isinstance(req["params"], (dict, list)):
            return error_reply(
                reply_id, protocol.INVALID_REQUEST, "params must be an object or array"
            )
        if "params" in req and not _all_finite(req["params"]):
            # NaN/Infinity parse (Python's JSON accepts them) but are no JSON values.
            msg = (
                "params must not hold NaN, infinite numbers or integers of more than %d digits"
                % (jsonwire.MAX_INT_DIGITS)
            )
            reply = error_reply(reply_id, protocol.INVALID_PARAMS, msg, "params")
            return None if req_id is _NO_ID else reply
        reply = self._call(method_name, req.get("params"), reply_id, actions, req.get(RAW))
        return None if req_id is _NO_ID else reply

    def _call(
        self, name: str, params: Any, req_id: Any, actions: List[Action], raw: Any = None
    ) -> Dict[str, Any]:
        method = protocol.METHODS.get(name)
        handler = self.handlers.get(name)
        if method is None or handler is None or not self.ctx.config.method_enabled(name):
            return error_reply(
                req_id, protocol.METHOD_NOT_FOUND, "method not found: %s" % name[:100]
            )
        if not method.frozen_ok and self.ctx.is_frozen():
            return error_reply(
                req_id,
                protocol.PERMISSION_DENIED,
                "%s is refused while filesystems are frozen" % name,
            )
        try:
            args = protocol.validate_params(method, params)
            if raw is not None:
                args[PAYLOAD] = raw
            result = handler(self.ctx, args)
        except protocol.ParamError as exc:
            return error_reply(req_id, protocol.INVALID_PARAMS, str(exc), exc.field)
        except AgentError as exc:
            reply = error_reply(req_id, exc.code, exc.message, exc.field)
            return reply
        except Exception:
            log.exception("internal error in %s", name)
            return error_reply(req_id, protocol.INTERNAL_ERROR, "internal error in %s" % name)
        if isinstance(result, tuple):
            result, action = result
            actions.append(action)
        return {"jsonrpc": "2.0", "id": req_id, "result": result}
