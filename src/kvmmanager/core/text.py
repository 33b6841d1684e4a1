"""Text that cannot be encoded: lone UTF-16 surrogates.

JSON lets a client write `"\\ud800"`, and Python's decoder turns it into a str holding a
surrogate code point on its own. Such a str cannot be encoded as UTF-8, so it breaks
whatever stores or prints it later: an SQLite/PostgreSQL row read back into a response,
a libvirt XML document, a log line. The API refuses it on input (`api/input_text.py`);
`encodable` repairs values that were stored before that check existed.
"""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def first_unencodable(text: str) -> str | None:
    """A description of the first character of `text` that is not encodable, or None."""
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return f"a lone UTF-16 surrogate (U+{ord(found.group()):04X}), which is not valid text"


def encodable(value: Any) -> Any:
    """A copy of a JSON-like value whose strings (keys too) show each lone surrogate as its
    visible escape (`\\ud800`), so the value can be encoded and nothing is silently lost."""
    if isinstance(value, str):
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)
    if isinstance(value, dict):
        return {encodable(k): encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [encodable(v) for v in value]
    return value
