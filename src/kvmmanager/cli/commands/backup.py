"""`kvm-manager backup ...`: backup policies (snapshots with retention) and their runs."""

from __future__ import annotations

from urllib.parse import quote

import typer

from kvmmanager.cli.api_client import client
from kvmmanager.cli.output import emit, info, wants_json

NAME = "backup"
app = typer.Typer(help="Backup policies: snapshots of VMs with retention.", no_args_is_help=True)

COLUMNS = ["name", "targets", "keep_last", "keep_daily", "keep_weekly", "timezone",
           "last_run_at", "last_status"]  # fmt: skip
RESULT_COLUMNS = ["host", "vm", "ok", "snapshot", "pruned", "error"]
# Exit code when the run happened but some VMs failed.
PARTIAL_EXIT = 3


def q(value: str) -> str:
    return quote(value, safe="")


def _target(text: str) -> dict[str, str]:
    host, sep, vm = text.rpartition("/")
    return {"host": host if sep and host else "local", "vm": vm}


@app.command("list")
def list_policies(ctx: typer.Context) -> None:
    with client(ctx) as api:
        data = api.get("/api/backup-policies")
    rows = [{**p, "targets": [f"{v['host']}/{v['vm']}" for v in p["vms"]]
             + ([f"tag:{p['tag']}"] if p["tag"] else [])} for p in data]  # fmt: skip
    emit(ctx, data if wants_json(ctx) else rows, COLUMNS)


@app.command("add")
def add(
    ctx: typer.Context,
    name: str,
    vms: list[str] = typer.Argument(None, help="VMs as NAME or HOST/NAME."),
    tag: str | None = typer.Option(None, "--tag", "-t", help="Also every VM with this tag."),
    host: str | None = typer.Option(None, "--host", "-H", help="Limit --tag to one host."),
    keep_last: int = typer.Option(7, "--keep-last"),
    keep_daily: int = typer.Option(0, "--keep-daily"),
    keep_weekly: int = typer.Option(0, "--keep-weekly"),
    tz: str = typer.Option("UTC", "--tz", help="Time zone of days and weeks."),
    quiesce: str = typer.Option("auto", "--quiesce", help="auto, never or require."),
) -> None:
    """Create a policy; run it with `backup run`, or on a timetable with
    `schedule add NAME backup --policy POLICY ...`."""
    body = {
        "name": name, "vms": [_target(v) for v in vms or []], "tag": tag, "host": host,
        "keep_last": keep_last, "keep_daily": keep_daily, "keep_weekly": keep_weekly,
        "timezone": tz, "quiesce": quiesce,
    }  # fmt: skip
    with client(ctx) as api:
        emit(ctx, api.post("/api/backup-policies", json=body))


@app.command("show")
def show(ctx: typer.Context, policy: str) -> None:
    with client(ctx) as api:
        emit(ctx, api.get(f"/api/backup-policies/{q(policy)}"))


@app.command("run")
def run(ctx: typer.Context, policy: str) -> None:
    """Back up now: a snapshot per VM, then prune to the retention. Exits 3 when some VMs
    failed."""
    with client(ctx) as api:
        res = api.post(f"/api/backup-policies/{q(policy)}/run")
    emit(ctx, res if wants_json(ctx) else res["results"], RESULT_COLUMNS)
    if not wants_json(ctx):
        info(f"{res['snapshot']}: {res['succeeded']} of {res['total']} vms backed up")
    if res["failed"]:
        raise typer.Exit(PARTIAL_EXIT)


@app.command("remove")
def remove(ctx: typer.Context, policy: str) -> None:
    """Forget a policy (its snapshots stay)."""
    with client(ctx) as api:
        api.delete(f"/api/backup-policies/{q(policy)}")
    info(f"backup policy {policy} removed")


@app.command("backups")
def list_backups(
    ctx: typer.Context,
    policy: str,
    vm: str,
    host: str = typer.Option("local", "--host", "-H", envvar="KVMM_HOST"),
) -> None:
    """The VM's backups made by POLICY, oldest first."""
    with client(ctx) as api:
        data = api.get(f"/api/backup-policies/{q(policy)}/backups/{q(host)}/{q(vm)}")
    emit(ctx, data, ["name", "created", "kind", "state"])


@app.command("restore")
def restore(
    ctx: typer.Context,
    policy: str,
    vm: str,
    snapshot: str,
    host: str = typer.Option("local", "--host", "-H", envvar="KVMM_HOST"),
    yes: bool = typer.Option(False, "--yes", help="Confirm: the VM's current state is lost."),
) -> None:
    """Put VM back to one of POLICY's backups (over its current state)."""
    if not yes:
        yes = typer.confirm(f"Restore {vm} to {snapshot}? Everything since is discarded")
    body = {"host": host, "vm": vm, "snapshot": snapshot, "confirm": yes}
    with client(ctx) as api:
        emit(ctx, api.post(f"/api/backup-policies/{q(policy)}/restore", json=body))
