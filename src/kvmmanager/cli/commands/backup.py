"""`kvm-manager backup ...`: backup policies (snapshots, or backups into a pool with
libvirt's backup API, with retention), their runs, and the backups they made."""

from __future__ import annotations

import typer

from kvmmanager.cli.api_client import client
from kvmmanager.cli.helpers import act_and_say, api_get, api_post, vm_target
from kvmmanager.cli.output import emit, info, wants_json
from kvmmanager.cli.urls import q

NAME = "backup"
app = typer.Typer(
    help="Backup policies (snapshots or backups into a pool) with retention; backups.",
    no_args_is_help=True,
)

COLUMNS = ["name", "method", "pool", "targets", "keep_last", "keep_daily", "keep_weekly",
           "timezone", "last_run_at", "last_status"]  # fmt: skip
RESULT_COLUMNS = ["host", "vm", "ok", "snapshot", "backup", "kind", "pruned", "error"]
IMAGE_COLUMNS = ["id", "vm", "policy", "kind", "parent_id", "status", "size", "created_at",
                 "verify_status"]  # fmt: skip
# Exit code when the run happened but some VMs failed.
PARTIAL_EXIT = 3


@app.command("list")
def list_policies(ctx: typer.Context) -> None:
    data = api_get(ctx, "/api/backup-policies")
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
    method: str = typer.Option(
        "snapshot",
        "--method",
        help="snapshot; backup (copies into --pool with the backup API); copy (full copies "
        "via a temporary snapshot and block commit).",
    ),
    pool: str | None = typer.Option(
        None, "--pool", help="Where backups go (--method backup or copy)."
    ),
    full_every: int = typer.Option(7, "--full-every", help="A full backup every N."),
) -> None:
    """Create a policy; run it with `backup run`, or on a timetable with
    `schedule add NAME backup --policy POLICY ...`."""
    body = {
        "name": name, "vms": [vm_target(v) for v in vms or []], "tag": tag, "host": host,
        "keep_last": keep_last, "keep_daily": keep_daily, "keep_weekly": keep_weekly,
        "timezone": tz, "quiesce": quiesce, "method": method, "pool": pool,
        "full_every": full_every,
    }  # fmt: skip
    emit(ctx, api_post(ctx, "/api/backup-policies", body))


@app.command("show")
def show(ctx: typer.Context, policy: str) -> None:
    emit(ctx, api_get(ctx, f"/api/backup-policies/{q(policy)}"))


@app.command("run")
def run(ctx: typer.Context, policy: str) -> None:
    """Back up now: a snapshot per VM, then prune to the retention. Exits 3 when some VMs
    failed."""
    res = api_post(ctx, f"/api/backup-policies/{q(policy)}/run")
    emit(ctx, res if wants_json(ctx) else res["results"], RESULT_COLUMNS)
    if not wants_json(ctx):
        info(f"{res['snapshot']}: {res['succeeded']} of {res['total']} vms backed up")
    if res["failed"]:
        raise typer.Exit(PARTIAL_EXIT)


@app.command("remove")
def remove(ctx: typer.Context, policy: str) -> None:
    """Forget a policy (its snapshots stay)."""
    act_and_say(
        ctx, "DELETE", f"/api/backup-policies/{q(policy)}", f"backup policy {policy} removed"
    )


@app.command("backups")
def list_backups(
    ctx: typer.Context,
    policy: str,
    vm: str,
    host: str = typer.Option("local", "--host", "-H", envvar="KVMM_HOST"),
) -> None:
    """The VM's backups made by POLICY, oldest first."""
    data = api_get(ctx, f"/api/backup-policies/{q(policy)}/backups/{q(host)}/{q(vm)}")
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
    emit(ctx, api_post(ctx, f"/api/backup-policies/{q(policy)}/restore", body))


# ---- backups made with libvirt's backup API (policies with --method backup) -----------


def _vm_path(host: str, vm: str) -> str:
    return f"/api/hosts/{q(host)}/vms/{q(vm)}/backups"


HOST_OPT = typer.Option("local", "--host", "-H", envvar="KVMM_HOST")


@app.command("images")
def images(
    ctx: typer.Context,
    vm: str | None = typer.Argument(None, help="Only this VM's (name or uuid)."),
    policy: str | None = typer.Option(None, "--policy", "-p"),
    host: str | None = typer.Option(None, "--host", "-H", envvar="KVMM_HOST"),
) -> None:
    """Backups made into pools, newest first."""
    params = {k: v for k, v in {"vm": vm, "policy": policy, "host": host}.items() if v}
    emit(ctx, api_get(ctx, "/api/backups", params=params), IMAGE_COLUMNS)


@app.command("take")
def take(
    ctx: typer.Context,
    policy: str,
    vm: str,
    kind: str = typer.Option("auto", "--kind", help="auto, full or incremental."),
    host: str = HOST_OPT,
) -> None:
    """Back VM up now into POLICY's pool (then POLICY's retention applies)."""
    with client(ctx) as api:
        emit(ctx, api.post(_vm_path(host, vm), json={"policy": policy, "kind": kind}))


@app.command("verify")
def verify(ctx: typer.Context, vm: str, backup_id: int, host: str = HOST_OPT) -> None:
    """Re-read a backup through libvirt: checksums and qcow2 headers. Exits 3 on a
    mismatch."""
    res = api_post(ctx, f"{_vm_path(host, vm)}/{backup_id}/verify")
    emit(ctx, res)
    if res["status"] != "ok":
        raise typer.Exit(PARTIAL_EXIT)


@app.command("restore-image")
def restore_image(
    ctx: typer.Context,
    vm: str,
    backup_id: int,
    name: str | None = typer.Option(None, "--name", help="Restore to a new VM of this name."),
    pool: str | None = typer.Option(None, "--pool", help="Pool for the new VM's disks."),
    over: bool = typer.Option(False, "--over", help="Restore over the (stopped) VM itself."),
    start: bool = typer.Option(False, "--start"),
    yes: bool = typer.Option(False, "--yes", help="Confirm --over: the VM's disks are lost."),
    host: str = HOST_OPT,
) -> None:
    """Restore a backup to a new VM (--name) or over the original (--over)."""
    if over and not yes:
        yes = typer.confirm(f"Replace {vm}'s disks with backup {backup_id}?")
    body = {"mode": "original" if over else "new", "name": name, "pool": pool,
            "start": start, "confirm": yes}  # fmt: skip
    emit(ctx, api_post(ctx, f"{_vm_path(host, vm)}/{backup_id}/restore", body))


@app.command("delete-image")
def delete_image(ctx: typer.Context, vm: str, backup_id: int, host: str = HOST_OPT) -> None:
    """Delete a backup's volumes and checkpoint (refused while an incremental uses it)."""
    act_and_say(ctx, "DELETE", f"{_vm_path(host, vm)}/{backup_id}", f"backup {backup_id} deleted")
