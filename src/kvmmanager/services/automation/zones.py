"""Time-zone names as a schedule or a backup retention rule takes them, checked. Its own
module so backup retention (backups/retention.py) does not import the schedule service."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kvmmanager.core.errors import InvalidInput


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidInput(f"unknown time zone {name!r}", field="timezone") from None
