"""API errors in the words of the command line.

The server names what was wrong in the API's words (`needs shrink=true`, `ask for
consistent='snapshot'`); on the command line the same thing is a flag (`--shrink`,
`--consistent snapshot`). `in_cli_words` rewrites `name=value` mentions of a parameter
the running command has into that command's flag or argument, and leaves every other
word alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

# name=true | name=false | name='value' | name="value" | name=value
_ASSIGNMENT = re.compile(r"\b([a-z][a-z0-9_]*)=(?:'([^']*)'|\"([^\"]*)\"|([\w.:/-]+))")


def command_flags(params: Iterable[Any]) -> dict[str, str]:
    """API field name -> how the command spells it: `--remove-volumes` for an option,
    `CAPACITY` for an argument. Both the parameter's name and its long flag's words map."""
    out: dict[str, str] = {}
    for param in params:
        name = getattr(param, "name", None)
        if not name:
            continue
        if getattr(param, "param_type_name", "") == "argument":
            out[name] = name.upper()
            continue
        longs = [o for o in getattr(param, "opts", ()) if o.startswith("--")]
        if longs:
            out[name] = longs[0]
            out[longs[0][2:].replace("-", "_")] = longs[0]
    return out


def in_cli_words(message: str, flags: Mapping[str, str], field: str | None = None) -> str:
    """`message` with every `field=value` of a known field said as the CLI says it; and
    when a refused input names a `field` that is one of this command's options, the
    message names its flag: a
    leading `forward: ...` or `dhcp_start 10.0.0.5 ...` becomes `--forward: ...` /
    `--dhcp-start 10.0.0.5 ...`, any other message gets the flag in front."""
    if not flags:
        return message
    said = _ASSIGNMENT.sub(lambda m: _assignment(m, flags), message)
    flag = flags.get(field) if field else None
    if flag is None or not flag.startswith("--") or flag in said:
        return said
    lead = re.match(rf"{re.escape(field or '')}(?=[:\s])", said)
    return flag + said[lead.end() :] if lead else f"{flag}: {said}"


def _assignment(m: re.Match[str], flags: Mapping[str, str]) -> str:
    flag = flags.get(m.group(1))
    if flag is None:
        return m.group(0)
    value = next(v for v in m.group(2, 3, 4) if v is not None)
    if not flag.startswith("--"):
        return f"{flag} {value}"
    if value.lower() == "true":
        return flag
    if value.lower() == "false":
        return f"no {flag}"
    return f"{flag} {value}"
