"""How the CLI prints: rich tables for people, `--json` for scripts, errors as one line.

Everything printed here may come from a guest (hostnames, OS names, descriptions, error
messages), so it is inert: control and bidi characters are shown as escapes
(`core.sanitize.inert`), and table cells are `rich.text.Text`, never markup (a
`[link=...]` in a description stays text). JSON is inert already (`ensure_ascii`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kvmmanager.core.sanitize import inert


@dataclass(slots=True)
class CliState:
    """Global options (`kvm-manager --url ... --json <command>`), in `ctx.obj`."""

    url: str | None = None
    json: bool = False
    # API field name -> the running command's flag (`shrink` -> `--shrink`), for errors.
    flags: dict[str, str] = field(default_factory=dict)


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    obj = root.obj if isinstance(root.obj, CliState) else None
    return obj or CliState()


def wants_json(ctx: typer.Context, local_flag: bool = False) -> bool:
    return local_flag or state(ctx).json


def print_error(message: str) -> None:
    # One line, whatever the message contains: scripts grep stderr.
    line = inert(" ".join(str(message).split()))
    print(f"error: {line}", file=sys.stderr, flush=True)


def _default(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat()
    return str(o)


def print_json(data: Any) -> None:
    # ensure_ascii (the default) escapes every control and non-ASCII character: inert.
    sys.stdout.write(json.dumps(data, indent=2, default=_default, ensure_ascii=True) + "\n")
    sys.stdout.flush()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, Mapping):
        # Nested objects (a backup's volumes, a clone's disks) read like the table's
        # own cells: their byte counts and dates shown for a person too.
        return ", ".join(f"{k}={_cell(human_value(str(k), v))}" for k, v in value.items())
    return str(value)


# Human tables only (--json keeps the raw numbers): which keys hold seconds since the
# epoch, which hold byte counts. A raw 1733540000.123 or 10737418240 reads as noise.
_EPOCH_KEYS = frozenset({"since", "created", "updated", "last_ts", "ts"})
_EPOCH_SUFFIXES = ("_at", "_ts", "_since")
# libvirt's volume and pool figures (capacity, allocation, available, physical) and a
# backup volume's `bytes` are byte counts too; `*_kib` fields (a VM's memory) are KiB.
_BYTES_KEYS = frozenset(
    {"size", "size_bytes", "capacity", "allocation", "available", "physical", "bytes"}
)
_KIB_SUFFIX = "_kib"
# Below this a number under an epoch key is a duration or a count, not a date.
_EPOCH_FLOOR = 100_000_000


def human_bytes(v: float | None) -> str:
    if v is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024 or unit == "TiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} TiB"


def human_value(key: str, value: Any) -> Any:
    """`value` of field `key` as a person reads it: a date for epoch seconds, a size for
    bytes, a float rounded to 2 decimals; anything else unchanged."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if (key in _EPOCH_KEYS or key.endswith(_EPOCH_SUFFIXES)) and value >= _EPOCH_FLOOR:
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if key in _BYTES_KEYS or key.endswith("_bytes"):
        return human_bytes(value)
    if key.endswith(_KIB_SUFFIX):
        return human_bytes(value * 1024)
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if value == value else "-"
    return value


def cell(value: Any) -> Text:
    """A table cell or printed value: plain text (no markup), control characters escaped;
    newlines stay, inside the cell."""
    return Text(inert(_cell(value), multiline=True))


def console() -> Console:
    return Console(soft_wrap=False)


def write_output(stream: TextIO, text: str, *, raw: bool = False) -> None:
    """Write text that is the user's data (a command's output, a domain XML): exact to a
    pipe or file, and with control characters escaped on a terminal unless `raw`
    (a guest's output must not drive the user's terminal by default)."""
    if not raw and stream.isatty():
        text = inert(text, multiline=True)
    stream.write(text)
    stream.flush()


def table(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str | tuple[str, str]],
    *,
    title: str | None = None,
) -> None:
    """Print rows as a table. A column is a key, or (key, header)."""
    t = Table(title=cell(title) if title is not None else None, header_style="bold")
    keys = []
    for col in columns:
        key, header = col if isinstance(col, tuple) else (col, col.replace("_", " ").upper())
        keys.append(key)
        t.add_column(header, overflow="fold")
    for row in rows:
        t.add_row(*(cell(human_value(k, row.get(k))) for k in keys))
    console().print(t)


def record(data: Mapping[str, Any], *, title: str | None = None) -> None:
    """Print one object as a two-column key/value table."""
    t = Table(title=cell(title) if title is not None else None, show_header=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for k, v in data.items():
        t.add_row(cell(k), cell(human_value(str(k), v)))
    console().print(t)


def emit(
    ctx: typer.Context,
    data: Any,
    columns: Sequence[str | tuple[str, str]] | None = None,
    *,
    json_flag: bool = False,
    title: str | None = None,
) -> None:
    """JSON when asked; else a table for a list (of dicts), a record for a dict."""
    if wants_json(ctx, json_flag):
        print_json(data)
    elif isinstance(data, list):
        cols = columns or (list(data[0].keys()) if data else [])
        table(data, cols, title=title)
    elif isinstance(data, Mapping):
        record(data, title=title)
    else:
        console().print(cell(data))


def info(message: str) -> None:
    """A human message that is not data: stderr, so `--json` stdout stays clean. One
    line: names and messages in it may come from a guest."""
    print(inert(message), file=sys.stderr, flush=True)
