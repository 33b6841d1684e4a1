"""Make untrusted text inert where people read it: terminals and log lines.

Guests (hostnames, OS names, command output, error messages, file names) and network
clients (URL paths) choose these strings. Printed raw, an ESC starts terminal control
sequences (colours, cursor moves, OSC-8 hyperlinks, window titles), BEL/CR/backspace
overwrite what was shown, bidi overrides (U+202E) reorder it, and a newline in a log
message forges a whole new log line. Each such character is replaced by its visible
Python escape (`\\x1b`, `\\u202e`, `\\n`), so the text stays readable and nothing is lost.

Rich markup (`[link=...]`) is the CLI's own problem: it prints untrusted text as
`rich.text.Text`, never as markup (see cli/output.py).
"""

from __future__ import annotations

import re

# C0 controls and DEL, C1 controls (0x9b is a one-byte CSI), the Unicode line/paragraph
# separators, and every bidirectional formatting character (embeddings, overrides,
# isolates, marks): these change what a terminal or log viewer shows without showing
# themselves. So do the invisible ones (soft hyphen, zero-width space/joiners, word
# joiner and invisible operators, BOM, Mongolian vowel separator, Hangul fillers, tag
# characters): two names that differ only by them look identical, which is how one
# user's VM is passed off as another's. Tab is harmless and kept; newline is kept only
# where the caller says a value may span lines (a table cell, a command's output).
_UNSAFE = (
    "\x00-\x08\x0b-\x1f\x7f-\x9f\xad\u061c\u115f\u1160\u180e\u200b-\u200f"
    "\u2028\u2029\u202a-\u202e\u2060-\u2064\u2066-\u2069\u3164\ufeff\uffa0"
    "\U000e0000-\U000e007f"
)
_UNSAFE_INLINE = re.compile(f"[\n{_UNSAFE}]")
_UNSAFE_MULTILINE = re.compile(f"[{_UNSAFE}]")


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch == "\n":
        return "\\n"
    if ch == "\r":
        return "\\r"
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def inert(text: str, *, multiline: bool = False) -> str:
    """`text` with every control, line-breaking and bidi character shown as an escape.

    With `multiline`, newlines stay (the caller lays the text out in a block of its
    own, like a table cell or a command's output); otherwise the result is one line.
    """
    pattern = _UNSAFE_MULTILINE if multiline else _UNSAFE_INLINE
    return pattern.sub(_escape, text)


def is_inert(text: str, *, multiline: bool = False) -> bool:
    """True when `inert(text)` would change nothing."""
    pattern = _UNSAFE_MULTILINE if multiline else _UNSAFE_INLINE
    return pattern.search(text) is None
