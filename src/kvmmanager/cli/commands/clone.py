"""`kvm-manager clone ...`: copy a VM (full or linked) and follow the job."""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from kvmmanager.cli.api_client import ApiClient, client
from kvmmanager.cli.commands._storage_common import HOST_OPTION
from kvmmanager.cli.output import emit, wants_json
from kvmmanager.cli.urls import q
from kvmmanager.core.errors import Cancelled, KvmmError

NAME = "clone"
app = typer.Typer(help="Clone VMs (full or linked copies).", no_args_is_help=True)
JOB_POLL_SECONDS = 0.5


def follow_job(api: ApiClient, job_id: str, label: str, show: bool) -> dict[str, Any]:
    """Poll a job to its end with a progress bar; its result, or its error raised."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(label, total=None, visible=show)
        while True:
            job = api.get(f"/api/jobs/{q(job_id)}")
            bar.update(task, completed=job.get("done") or 0, total=job.get("total") or None)
            if job.get("state") in ("done", "failed", "cancelled"):
                break
            time.sleep(JOB_POLL_SECONDS)
    if job["state"] == "done":
        return job.get("result") or {}
    error = job.get("error") or {}
    message = str(error.get("message") or f"job {job_id} {job['state']}")
    if job["state"] == "cancelled":
        raise Cancelled(message)
    raise KvmmError(message, field=error.get("field"))


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
    with client(ctx) as api:
        started = api.post(f"/api/hosts/{q(host)}/vms/{q(vm)}/clone", json=body)
        if not wait:
            emit(ctx, started)
            return
        result = follow_job(api, started["job_id"], f"clone {vm}", not wants_json(ctx))
    emit(ctx, result)
