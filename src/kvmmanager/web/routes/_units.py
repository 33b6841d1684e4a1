"""The create form's sizes with their unit selectors: memory in MiB or GiB, a disk in
MiB, GiB or TiB, turned into what the VM service takes (whole MiB; GiB)."""

from __future__ import annotations

import math

from kvmmanager.core.errors import InvalidInput

# Factor to the service's unit: MiB for memory, GiB for disks.
MEMORY_UNITS = {"MiB": 1.0, "GiB": 1024.0}
DISK_UNITS = {"MiB": 1 / 1024, "GiB": 1.0, "TiB": 1024.0}


def _number(text: str, label: str, field: str) -> float:
    try:
        value = float(text.strip() or "0")
    except ValueError:
        raise InvalidInput(f"{label}: '{text[:20]}' is not a number", field=field) from None
    if not math.isfinite(value):
        raise InvalidInput(f"{label}: '{text[:20]}' is not a number", field=field)
    return value


def memory_mib(text: str, unit: str, field: str = "memory_mib", label: str = "Memory") -> int:
    """A memory field in its unit as whole MiB (1.5 GiB -> 1536)."""
    factor = MEMORY_UNITS.get(unit, 1.0)
    shown = f"{text.strip()[:20]} {unit if unit in MEMORY_UNITS else 'MiB'}"
    try:
        mib = _number(text, label, field) * factor
    except InvalidInput:
        raise InvalidInput(f"{label}: {shown} is not a whole number of MiB", field=field) from None
    if abs(mib - round(mib)) > 1e-6:
        raise InvalidInput(f"{label}: {shown} is not a whole number of MiB", field=field)
    return round(mib)


def optional_memory_mib(text: str, unit: str, field: str, label: str) -> int | None:
    """An optional memory field (empty: not given) in its unit as whole MiB."""
    return memory_mib(text, unit, field, label) if text.strip() else None


def disk_gib(text: str, unit: str) -> float:
    """The New disk field in its unit as GiB (512 MiB -> 0.5, 2 TiB -> 2048)."""
    return _number(text, "New disk", "disk_gib") * DISK_UNITS.get(unit, 1.0)
