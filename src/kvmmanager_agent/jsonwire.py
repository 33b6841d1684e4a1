"""JSON for the wire and the config file, without keeping the `json` package resident.

`json` imports `re` (and with it `enum`) for its pure-Python fallbacks, ~1.4 MB of an idle
agent's 10 MB, for code that CPython's C accelerator `_json` never runs. This module
builds the same scanner and encoder objects `json` itself builds from `_json`, with the
same settings as `json.loads` and compact `json.dumps(..., separators=(",", ":"),
allow_nan=False)`.
Where `_json` is missing or its private constructors take other arguments (another
interpreter, a future CPython), a round trip at import fails and `json` is used instead.

Errors: `loads` raises ValueError (the C scanner's own `json.JSONDecodeError`) or
RecursionError for deep nesting, as `json.loads` does, and nothing else. The scanner
builds its error from `json.decoder`: CPython 3.8/3.9 and 3.12+ import it on the first
bad input, but 3.10 and 3.11 only look it up in `sys.modules` and, not finding it, fail
with `SystemError: ... returned NULL without setting an exception`. So on any error
other than those two, `loads` imports `json.decoder` (once, only on bad input: a
well-behaved host never pays for it) and scans again to get the real error; whatever
still goes wrong becomes a ValueError.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Tuple

_WHITESPACE = " \t\n\r"
# Integers longer than this parse as an infinity of their sign, which the dispatcher
# refuses like 1e999 (-32602 in params, -32600 as an id) keeping the request's id. No
# parameter needs more (2**64 has 20 digits), int() of a long digit string is quadratic
# before 3.11, and 3.11+ refuses more than 4300 digits with a ValueError that would
# make the whole line a parse error.
MAX_INT_DIGITS = 64


def _parse_int(text: str) -> Any:
    if len(text) > MAX_INT_DIGITS + 1:  # + 1: the sign
        return float("-inf") if text.startswith("-") else float("inf")
    return int(text)


_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _ScanContext:
    """The attributes `_json.make_scanner` reads, as `json.JSONDecoder()` sets them."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = staticmethod(_parse_int)
    parse_constant = staticmethod(_CONSTANTS.__getitem__)
    memo: Dict[str, Any] = {}


def _not_serializable(obj: Any) -> Any:
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


def _build() -> Tuple[Callable[[str], Any], Callable[[Any], str]]:
    import _json

    # typeshed types the context as a make_scanner itself; the C scanner only reads the
    # attributes _ScanContext has (the ones json.JSONDecoder sets).
    scan = _json.make_scanner(_ScanContext())  # type: ignore[arg-type]
    # markers=None: no circular check (replies are trees built here); ASCII output keeps
    # lone surrogates from odd file names escapes, never invalid UTF-8.
    # allow_nan=False: NaN/Infinity are not JSON (RFC 8259); the encoder raises ValueError.
    encode = _json.make_encoder(
        None, _not_serializable, _json.encode_basestring_ascii, None, ":", ",", False, False, False
    )

    def scan_checked(text: str, start: int) -> Tuple[Any, int]:
        try:
            return scan(text, start)
        except StopIteration as exc:
            raise ValueError("Expecting value: char %d" % exc.value) from None
        except (ValueError, RecursionError):
            raise
        except Exception as exc:
            first = exc
        # The 3.10/3.11 scanner could not build its error without json.decoder (or
        # something else failed inside it): load json.decoder and try once more.
        try:
            import json.decoder  # noqa: F401
        except Exception:
            raise ValueError("invalid JSON (%s)" % type(first).__name__) from None
        try:
            return scan(text, start)
        except StopIteration as exc:
            raise ValueError("Expecting value: char %d" % exc.value) from None
        except (ValueError, RecursionError):
            raise
        except Exception as exc:
            raise ValueError("invalid JSON (%s)" % type(exc).__name__) from None

    def loads(text: str) -> Any:
        start = len(text) - len(text.lstrip(_WHITESPACE))
        obj, end = scan_checked(text, start)
        if text[end:].strip(_WHITESPACE):
            raise ValueError("Extra data: char %d" % end)
        return obj

    def dumps(obj: Any) -> str:
        if isinstance(obj, str):
            return _json.encode_basestring_ascii(obj)
        return "".join(encode(obj, 0))

    sample = {"a": [1, -2.5, "é\x00", None, True, False, {"b": {}}], "c": []}
    if loads(" " + dumps(sample) + "\n") != sample:
        raise ValueError("the _json round trip differs")
    return loads, dumps


def _fallback() -> Tuple[Callable[[str], Any], Callable[[Any], str]]:
    import json

    def dumps(obj: Any) -> str:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)

    def loads(text: str) -> Any:
        return json.loads(text, parse_int=_parse_int)

    return loads, dumps


try:
    loads, dumps = _build()
except (ImportError, AttributeError, TypeError, ValueError):
    loads, dumps = _fallback()
