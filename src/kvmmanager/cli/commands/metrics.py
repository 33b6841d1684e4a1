"""`kvm-manager metrics ...`: VM resource use from the manager's collector."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import typer

from kvmmanager.cli.helpers import api_get
from kvmmanager.cli.output import emit, human_bytes, wants_json
from kvmmanager.cli.urls import q
from kvmmanager.core.errors import InvalidInput

NAME = "metrics"
HOST_OPTION = typer.Option("local", "--host", "-H", envvar="KVMM_HOST", help="Host name.")
app = typer.Typer(
    help="VM metrics: per-host table, one VM, history, collector state.", no_args_is_help=True
)

RATE_COLUMNS = [
    ("name", "VM"),
    ("state", "STATE"),
    ("cpu", "CPU %"),
    ("mem", "MEMORY"),
    ("disk_rd", "DISK READ/s"),
    ("disk_wr", "DISK WRITE/s"),
    ("iops", "IOPS r/w"),
    ("net_rx", "NET RX/s"),
    ("net_tx", "NET TX/s"),
]
SORT_KEYS = {"name": "name", "cpu": "cpu_pct", "mem": "mem_bytes", "disk": "disk_wr_bps"}


def _num(v: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


# Where a memory figure comes from: the guest's own (balloon driver) or what the QEMU
# process holds on the host, which includes QEMU itself and exceeds the guest's size.
MEM_SOURCES = {"guest": "used in guest", "rss": "QEMU process RSS"}


def human_mem(r: dict[str, Any]) -> str:
    shown = human_bytes(r.get("mem_bytes"))
    source = MEM_SOURCES.get(r.get("mem_source") or "")
    return f"{shown} ({source})" if source and r.get("mem_bytes") is not None else shown


def human_row(r: dict[str, Any]) -> dict[str, str]:
    return {
        "name": r["name"],
        "state": r["state"],
        "cpu": _num(r.get("cpu_pct")),
        "mem": human_mem(r),
        "disk_rd": human_bytes(r.get("disk_rd_bps")),
        "disk_wr": human_bytes(r.get("disk_wr_bps")),
        "iops": f"{_num(r.get('disk_rd_iops'), '{:.0f}')}/{_num(r.get('disk_wr_iops'), '{:.0f}')}",
        "net_rx": human_bytes(r.get("net_rx_bps")),
        "net_tx": human_bytes(r.get("net_tx_bps")),
    }


@app.command("host")
def host_metrics(
    ctx: typer.Context,
    host: str = HOST_OPTION,
    sort: str = typer.Option("name", help="name, cpu, mem or disk (busiest first)"),
    limit: int = typer.Option(0, min=0, help="show only the first N rows (0: all)"),
) -> None:
    """The latest rates of every VM of a host."""
    if sort not in SORT_KEYS:
        raise InvalidInput(f"--sort must be one of {', '.join(SORT_KEYS)}", field="sort")
    data = api_get(ctx, f"/api/hosts/{q(host)}/metrics")
    rows: list[dict[str, Any]] = data["vms"]
    if sort != "name":
        key = SORT_KEYS[sort]
        rows.sort(key=lambda r: r.get(key) or 0.0, reverse=True)
    if limit:
        rows = rows[:limit]
    if wants_json(ctx):
        emit(ctx, {**data, "vms": rows})
        return
    emit(ctx, [human_row(r) for r in rows], RATE_COLUMNS)


@app.command("vm")
def vm_metrics(ctx: typer.Context, vm: str, host: str = HOST_OPTION) -> None:
    """The latest figures of one VM, with its guest agent's when it runs one."""
    data = api_get(ctx, f"/api/hosts/{q(host)}/vms/{q(vm)}/metrics")
    if wants_json(ctx):
        emit(ctx, data)
        return
    shown: dict[str, Any] = human_row(data)
    if data.get("balloon_kib") is not None:
        shown["guest memory size"] = human_bytes(data["balloon_kib"] * 1024)
    shown["cpu seconds"] = _num(data["totals"].get("cpu_seconds"))
    guest = data.get("guest") or {}
    if guest:
        shown["guest cpu %"] = _num(guest.get("cpu_percent"))
        mem = guest.get("memory") or {}
        if "used_kb" in mem:
            shown["guest memory used"] = human_bytes(mem["used_kb"] * 1024)
        if "load_average" in guest:
            shown["guest load"] = " ".join(f"{v:.2f}" for v in guest["load_average"])
    shown["collected"] = datetime.fromtimestamp(data["ts"], UTC).isoformat(timespec="seconds")
    emit(ctx, shown)


@app.command("history")
def history(
    ctx: typer.Context,
    vm: str,
    last: float = typer.Option(
        600.0, help="Seconds back from now (up to metrics.retention_days: 30 days by default)."
    ),
    field: list[str] = typer.Option(
        ["cpu_pct", "mem_bytes"], "--field", "-f", help="fields to show (repeat)"
    ),
    host: str = HOST_OPTION,
) -> None:
    """A VM's history: full resolution up to 1 h back, 5-minute means up to 24 h, hourly
    means beyond."""
    data = api_get(ctx, f"/api/hosts/{q(host)}/vms/{q(vm)}/metrics/history", params={"last": last})
    unknown = [f for f in field if f not in data["fields"]]
    if unknown:
        raise InvalidInput(
            f"unknown field {unknown[0]!r}; fields: {', '.join(data['fields'])}", field="field"
        )
    if wants_json(ctx):
        emit(ctx, data)
        return
    series = data["series"]
    rows = []
    for i, ts in enumerate(series["ts"]):
        row = {"time": datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")}
        for f in field:
            v = series[f][i]
            row[f] = human_bytes(v) if f.endswith(("bytes", "bps")) else _num(v)
        rows.append(row)
    emit(ctx, rows, ["time", *field], title=f"every {data['step']:g} s")


@app.command("collectors")
def collectors(ctx: typer.Context) -> None:
    """The collector of each host: collections, skipped (overrun) ticks, errors, cost."""
    data = api_get(ctx, "/api/metrics/collectors")
    now = time.time()
    for c in data:
        c["age_seconds"] = round(now - c["last_ts"], 1) if c.get("last_ts") else None
    emit(
        ctx,
        data,
        [
            "host",
            "vms",
            "cycles",
            "overruns",
            "errors",
            "last_duration_seconds",
            "age_seconds",
            "last_error",
        ],
    )
