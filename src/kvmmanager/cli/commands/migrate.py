"""`kvm-manager migrate ...`: move a VM to another host (pre-flight check or the job)."""

from __future__ import annotations

import typer

from kvmmanager.cli.helpers import HOST_OPTION, api_post, start_job
from kvmmanager.cli.output import emit
from kvmmanager.cli.urls import q

NAME = "migrate"
app = typer.Typer(help="Migrate VMs between hosts (live or offline).", no_args_is_help=True)


def _body(
    target: str, live: bool, copy_storage: bool, auto_converge: bool, post_copy: bool,
    compressed: bool, bandwidth: int | None, migrate_uri: str | None,
) -> dict[str, object]:  # fmt: skip
    body: dict[str, object] = {
        "target": target,
        "live": live,
        "copy_storage": copy_storage,
        "auto_converge": auto_converge,
        "post_copy": post_copy,
        "compressed": compressed,
    }
    if bandwidth is not None:
        body["bandwidth_mib"] = bandwidth
    if migrate_uri is not None:
        body["migrate_uri"] = migrate_uri
    return body


LIVE = typer.Option(True, "--live/--offline", help="Offline: a stopped VM's definition.")
COPY = typer.Option(False, "--copy-storage", help="Copy local disks to the target.")
AUTO = typer.Option(False, "--auto-converge")
POST = typer.Option(False, "--post-copy")
COMP = typer.Option(False, "--compressed")
BW = typer.Option(None, "--bandwidth", min=1, help="Cap the bandwidth (MiB/s).")
MURI = typer.Option(
    None, "--migrate-uri", help="tcp://HOST[:PORT] for the data (default: the target's host)."
)


@app.command("check")
def check(
    ctx: typer.Context, vm: str, target: str, live: bool = LIVE, copy_storage: bool = COPY,
    auto_converge: bool = AUTO, post_copy: bool = POST, compressed: bool = COMP,
    bandwidth: int | None = BW, migrate_uri: str | None = MURI, host: str = HOST_OPTION,
) -> None:  # fmt: skip
    """Say what the migration would do, or why it cannot work."""
    body = _body(
        target, live, copy_storage, auto_converge, post_copy, compressed, bandwidth, migrate_uri
    )
    emit(ctx, api_post(ctx, f"/api/hosts/{q(host)}/vms/{q(vm)}/migration/check", body))


@app.command("start")
def start(
    ctx: typer.Context, vm: str, target: str, live: bool = LIVE, copy_storage: bool = COPY,
    auto_converge: bool = AUTO, post_copy: bool = POST, compressed: bool = COMP,
    bandwidth: int | None = BW, migrate_uri: str | None = MURI,
    wait: bool = typer.Option(True, "--wait/--no-wait"), host: str = HOST_OPTION,
) -> None:  # fmt: skip
    """Migrate VM to TARGET (a job; follows it unless --no-wait)."""
    body = _body(
        target, live, copy_storage, auto_converge, post_copy, compressed, bandwidth, migrate_uri
    )
    start_job(ctx, f"/api/hosts/{q(host)}/vms/{q(vm)}/migrate", body, f"migrate {vm}", wait=wait)
