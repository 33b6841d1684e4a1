"""`kvm-manager clone ...`: copy a VM (full or linked) and follow the job."""

from __future__ import annotations

import typer

from kvmmanager.cli.helpers import HOST_OPTION, start_job
from kvmmanager.cli.urls import q

NAME = "clone"
app = typer.Typer(help="Clone VMs (full or linked copies).", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    vm: str,
    new_name: str,
    mode: str = typer.Option("full", "--mode", help="full, or linked (templates only)."),
    consistent: str = typer.Option(
        "refuse", "--consistent", help="Running source: refuse, or snapshot (copy under one)."
    ),
    start: bool = typer.Option(False, "--start", help="Start the clone."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow the job to its end."),
    host: str = HOST_OPTION,
) -> None:
    """Clone VM into NEW_NAME (new UUID and MACs, its own disks)."""
    body = {"name": new_name, "mode": mode, "consistent": consistent, "start": start}
    start_job(ctx, f"/api/hosts/{q(host)}/vms/{q(vm)}/clone", body, f"clone {vm}", wait=wait)
