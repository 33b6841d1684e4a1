"""libvirt's scaled size units (``KiB``, ``G``, ``MB``, ``bytes``...) to bytes and back.

Example::

    parse_size("20G")              # 21474836480
    size_to_bytes(512, "MiB")      # 536870912
    bytes_to_kib(1025)             # 2 (rounds up, as libvirt does for memory)
"""

from __future__ import annotations

import math
import re

from kvmmanager.core.errors import InvalidInput

__all__ = ["bytes_to_kib", "format_size", "parse_size", "size_to_bytes"]


# libvirt's scaled units: a bare letter or "XiB" is binary, "XB" is decimal, both any case.
_UNIT_FACTORS: dict[str, int] = {"b": 1, "bytes": 1}
for _i, _letter in enumerate("kmgtpe", start=1):
    _UNIT_FACTORS[_letter] = 1024**_i
    _UNIT_FACTORS[f"{_letter}ib"] = 1024**_i
    _UNIT_FACTORS[f"{_letter}b"] = 1000**_i


def size_to_bytes(value: int | str, unit: str | None = "bytes", *, field: str = "size") -> int:
    """Convert ``value`` expressed in a libvirt unit (``KiB``, ``G``, ``MB``, ``bytes``...)."""
    factor = _UNIT_FACTORS.get((unit or "bytes").strip().lower())
    if factor is None:
        raise InvalidInput(f"unknown size unit {unit!r}", field=field)
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{field} must be an integer, got {value!r}", field=field) from exc
    if number < 0:
        raise InvalidInput(f"{field} must not be negative", field=field)
    return number * factor


def bytes_to_kib(value: int) -> int:
    """Bytes to KiB, rounding up as libvirt does for memory."""
    return math.ceil(value / 1024)


_SIZE_TEXT = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")


def parse_size(text: str | int, *, default_unit: str = "bytes", field: str = "size") -> int:
    """Parse ``"20G"``, ``"512 MiB"``, ``"1000000KB"`` or a bare number into bytes."""
    if isinstance(text, int):
        return size_to_bytes(text, default_unit, field=field)
    match = _SIZE_TEXT.match(text)
    if not match:
        raise InvalidInput(f"{field} must look like '20G' or '512MiB', got {text!r}", field=field)
    return size_to_bytes(match.group(1), match.group(2) or default_unit, field=field)


def format_size(value: int) -> str:
    """Human-readable binary size, for messages."""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
