"""What the VM page's small forms tell a person when they answer: what was done to which
object, or why it failed in the form's own words (its labels, never a service's field
names such as `size_gib`), prefixed with the button that was pressed."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping

from kvmmanager.core.errors import KvmmError


def in_form_words(message: str, labels: Mapping[str, str]) -> str:
    """A service's message with its field names (and `field=value`) said with the form's
    labels: the interface's words, not the API's."""
    for name, label in labels.items():
        message = re.sub(rf"\b{re.escape(name)}=(\S+)", rf"{label} \1", message)
        message = re.sub(rf"\b{re.escape(name)}\b", label, message)
    return message


def failed(action: str, exc: KvmmError, labels: Mapping[str, str] | None = None) -> KvmmError:
    """The same error (type, status, field) with a message a person can act on:
    `"<action> failed: <what went wrong>"`, each service field name the message uses
    replaced by the form's label for it."""
    message = in_form_words(exc.message, labels or {})
    out = copy.copy(exc)
    out.message = f"{action} failed: {message}"
    out.args = (out.message,)
    return out
