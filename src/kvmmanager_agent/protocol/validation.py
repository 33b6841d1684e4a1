"""Checking a request's params against its method's entry: types, bounds, choices,
defaults filled in. Both ends use it: the agent before it runs a method, the host
client before it sends one.

Standard library only and Python 3.8 compatible: it runs inside guests.
"""

from __future__ import annotations

import re

from .schema import Method, Param

# typing costs ~2 MB of resident memory in the guest agent; annotations are strings.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Tuple

# Any, not type: isinstance() with these narrows the checked value, and the bounds checks
# below compare it with numbers or take its len() by kind.
_TYPES: Dict[str, Tuple[Any, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


class ParamError(ValueError):
    """A parameter is wrong; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        ValueError.__init__(self, message)
        self.field = field


# A lone surrogate (JSON "\\ud800") is a str in Python but no text: it cannot be encoded
# for a path, an argv entry or a file, so every string in params is refused here.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    return False


def _check_value(p: Param, value: Any) -> Any:
    types = _TYPES[p.kind]
    # bool is an int in Python; JSON true is never a valid integer parameter.
    if (isinstance(value, bool) and p.kind != "boolean") or not isinstance(value, types):
        raise ParamError(p.name, "'%s' must be of type %s" % (p.name, p.kind))
    if p.kind in ("integer", "number"):
        if value != value or value in (float("inf"), float("-inf")):
            raise ParamError(p.name, "'%s' must be a finite number" % p.name)
        if p.min is not None and value < p.min:
            raise ParamError(p.name, "'%s' must be >= %s" % (p.name, p.min))
        if p.max is not None and value > p.max:
            raise ParamError(p.name, "'%s' must be <= %s" % (p.name, p.max))
    elif p.kind in ("string", "array"):
        if p.min is not None and len(value) < p.min:
            raise ParamError(p.name, "'%s' is too short (minimum %d)" % (p.name, p.min))
        if p.max is not None and len(value) > p.max:
            raise ParamError(p.name, "'%s' is too long (maximum %d)" % (p.name, p.max))
    if _has_surrogate(value):
        raise ParamError(p.name, "'%s' contains a lone surrogate (not valid Unicode text)" % p.name)
    if p.choices is not None and value not in p.choices:
        raise ParamError(
            p.name, "'%s' must be one of %s" % (p.name, ", ".join(map(str, p.choices)))
        )
    return value


def validate_params(method: Method, params: Any) -> Dict[str, Any]:
    """Return the complete parameter dict (defaults filled in) or raise ParamError.

    `params` may be absent (None), an object (by name) or an array (by position), as
    JSON-RPC 2.0 allows.
    """
    if params is None:
        params = {}
    elif isinstance(params, list):
        if len(params) > len(method.params):
            raise ParamError("params", "too many positional parameters for '%s'" % method.name)
        params = dict(zip((p.name for p in method.params), params))  # noqa: B905 (3.8)
    elif not isinstance(params, dict):
        raise ParamError("params", "params must be an object or an array")
    known = {p.name for p in method.params}
    for key in params:
        if key not in known:
            raise ParamError(
                str(key)[:64], "unknown parameter '%s' for '%s'" % (str(key)[:64], method.name)
            )
    out = {}  # type: Dict[str, Any]
    for p in method.params:
        if p.name not in params or (params[p.name] is None and not p.required):
            if p.required:
                raise ParamError(p.name, "missing required parameter '%s'" % p.name)
            default = p.default
            out[p.name] = list(default) if isinstance(default, list) else default
            continue
        out[p.name] = _check_value(p, params[p.name])
    return out
