"""What the VM page's small forms tell a person when they answer: what was done to which
object, or why it failed in the form's own words (its labels, never a service's field
names such as `size_gib`), prefixed with the button that was pressed."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping

from kvmmanager.core.errors import KvmmError


def failed(action: str, exc: KvmmError, labels: Mapping[str, str] | None = None) -> KvmmError:
    """The same error (type, status, field) with a message a person can act on:
    `"<action> failed: <what went wrong>"`, each service field name the message uses
    replaced by the form's label for it."""
    message = exc.message
    for name, label in (labels or {}).items():
        message = re.sub(rf"\b{re.escape(name)}\b", label, message)
    out = copy.copy(exc)
    out.message = f"{action} failed: {message}"
    out.args = (out.message,)
    return out
