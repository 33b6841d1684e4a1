"""`kvm-manager template ...`: mark VMs as templates and deploy VMs from them."""

from __future__ import annotations

import typer

from kvmmanager.cli.api_client import client
from kvmmanager.cli.helpers import HOST_OPTION, api_get, start_job
from kvmmanager.cli.output import emit
from kvmmanager.cli.urls import q

NAME = "template"
app = typer.Typer(help="Templates: list, mark, unmark, deploy.", no_args_is_help=True)
COLUMNS = ["name", "uuid", "linked_clones", "description"]


@app.command("list")
def list_templates(ctx: typer.Context, host: str = HOST_OPTION) -> None:
    emit(ctx, api_get(ctx, f"/api/hosts/{q(host)}/templates"), COLUMNS)


def _set_template(ctx: typer.Context, host: str, vm: str, template: bool) -> None:
    with client(ctx) as api:
        emit(
            ctx, api.put(f"/api/hosts/{q(host)}/vms/{q(vm)}/template", json={"template": template})
        )


@app.command("mark")
def mark(ctx: typer.Context, vm: str, host: str = HOST_OPTION) -> None:
    """Make a shut-off VM a template (it is never started again while marked)."""
    _set_template(ctx, host, vm, True)


@app.command("unmark")
def unmark(ctx: typer.Context, vm: str, host: str = HOST_OPTION) -> None:
    """Make a template a VM again (refused while linked clones use its disks)."""
    _set_template(ctx, host, vm, False)


@app.command("deploy")
def deploy(
    ctx: typer.Context,
    template: str,
    new_name: str,
    mode: str = typer.Option("linked", "--mode", help="linked (default) or full."),
    start: bool = typer.Option(False, "--start", help="Start the new VM."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow the job to its end."),
    host: str = HOST_OPTION,
) -> None:
    """A new VM from TEMPLATE."""
    body = {"name": new_name, "mode": mode, "start": start}
    path = f"/api/hosts/{q(host)}/templates/{q(template)}/deploy"
    start_job(ctx, path, body, f"deploy {template}", wait=wait)
