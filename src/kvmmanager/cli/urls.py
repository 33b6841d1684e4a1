"""The API paths the commands ask for, built from what a user typed (one place for all)."""

from __future__ import annotations

from urllib.parse import quote


def q(value: str) -> str:
    """One URL path segment; '/' cannot smuggle in another path."""
    return quote(value, safe="")
