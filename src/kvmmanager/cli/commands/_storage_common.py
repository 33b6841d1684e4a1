"""Bits shared by the pool, vol and net commands (private: not a command module)."""

from __future__ import annotations

import typer

HOST_OPTION = typer.Option("local", "--host", "-H", envvar="KVMM_HOST", help="Host name.")


def fmt_bytes(value: int | None) -> str | None:
    if value is None:
        return None
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)
