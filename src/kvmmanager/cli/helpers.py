"""What the commands do alike, so that a command module says only what is its own: the
`--host` option, byte sizes, asking the API and printing its answer, saying what was
done, and following a job to its end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from kvmmanager.cli.api_client import ApiClient, client
from kvmmanager.cli.output import emit, info, wants_json
from kvmmanager.cli.urls import q
from kvmmanager.core.errors import Cancelled, KvmmError

HOST_OPTION = typer.Option("local", "--host", "-H", envvar="KVMM_HOST", help="Host name.")
JOB_POLL_SECONDS = 0.5
# The ISO deploy and bundle jobs, shown as lines, were always polled more often.
LINES_POLL_SECONDS = 0.2
Columns = Sequence[str | tuple[str, str]]


def fmt_bytes(value: int | None) -> str | None:
    if value is None:
        return None
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def api_get(ctx: typer.Context, path: str, **kwargs: Any) -> Any:
    """One GET of the API; the decoded answer."""
    with client(ctx) as api:
        return api.get(path, **kwargs)


def api_post(ctx: typer.Context, path: str, body: Any = None) -> Any:
    """One POST of `body` (JSON) to the API; the decoded answer."""
    with client(ctx) as api:
        return api.post(path, json=body)


def emit_sized(ctx: typer.Context, data: Any, columns: Columns, sizes: Sequence[str]) -> None:
    """`emit`, with the byte counts named in `sizes` shown as KiB, MiB... (JSON keeps the
    numbers)."""

    def human(row: Mapping[str, Any]) -> dict[str, Any]:
        return {**row, **{key: fmt_bytes(row.get(key)) for key in sizes}}

    if wants_json(ctx):
        emit(ctx, data)
    elif isinstance(data, list):
        emit(ctx, [human(row) for row in data], columns)
    else:
        emit(ctx, human(data))


def vm_target(text: str) -> dict[str, str]:
    """A VM as the user names it, NAME or HOST/NAME, as the API's {"host", "vm"}."""
    host, sep, vm = text.rpartition("/")
    return {"host": host if sep and host else "local", "vm": vm}


def act_and_say(
    ctx: typer.Context,
    method: str,
    path: str,
    message: str,
    *,
    params: Mapping[str, Any] | None = None,
) -> None:
    """Ask for a change whose answer holds nothing to show; then say `message` (stderr)."""
    with client(ctx) as api:
        api.request(method, path, params=params)
    info(message)


def job_result(job: Mapping[str, Any], job_id: str) -> dict[str, Any]:
    """A finished job's result, or its error raised (Cancelled when it was cancelled)."""
    if job["state"] == "done":
        return job.get("result") or {}
    error = job.get("error") or {}
    message = str(error.get("message") or f"job {job_id} {job['state']}")
    if job["state"] == "cancelled":
        raise Cancelled(message)
    raise KvmmError(message, field=error.get("field"))


def poll_job(
    api: ApiClient,
    job_id: str,
    seen: Callable[[dict[str, Any]], None],
    every: float = JOB_POLL_SECONDS,
) -> dict[str, Any]:
    """Ask for the job every `every` seconds, handing each answer to `seen`, to its end."""
    while True:
        job = api.get(f"/api/jobs/{q(job_id)}")
        seen(job)
        if job.get("state") in ("done", "failed", "cancelled"):
            return job_result(job, job_id)
        time.sleep(every)


def progress(*, speed: bool = True, quiet: bool = False) -> Progress:
    """A progress bar on stderr (bytes, time left; the speed for transfers). Not shown at
    all when quiet: even with no visible task a live display ends with a line of its own,
    which came out as an empty line before an error."""
    columns: list[ProgressColumn] = [TextColumn("{task.description}"), BarColumn()]
    columns.append(DownloadColumn())
    if speed:
        columns.append(TransferSpeedColumn())
    columns.append(TimeRemainingColumn())
    return Progress(*columns, console=Console(stderr=True), transient=False, disable=quiet)


def follow_job(
    api: ApiClient, job_id: str, label: str, show: bool, *, speed: bool = False
) -> dict[str, Any]:
    """Follow a job to its end with a progress bar; its result, or its error raised."""
    with progress(speed=speed) as bar:
        task = bar.add_task(label, total=None, visible=show)

        def seen(job: dict[str, Any]) -> None:
            bar.update(task, completed=job.get("done") or 0, total=job.get("total") or None)

        return poll_job(api, job_id, seen)


def follow_job_in_lines(
    api: ApiClient, job_id: str, show: bool, every: float = LINES_POLL_SECONDS
) -> dict[str, Any]:
    """Follow a job to its end, its progress as a line on stderr whenever it changes."""
    last = ""

    def seen(job: dict[str, Any]) -> None:
        nonlocal last
        if show and job.get("total"):
            line = f"{job.get('message') or job['kind']}: {job['done']}/{job['total']} bytes"
            if line != last:
                info(line)
                last = line

    return poll_job(api, job_id, seen, every)


def start_job(
    ctx: typer.Context,
    path: str,
    body: Any,
    label: str,
    *,
    wait: bool,
    speed: bool = False,
    shown: Callable[[typer.Context, Any], None] = emit,
) -> None:
    """POST what starts a job; with `wait`, follow it and print its result with `shown`,
    else print the started job (its id)."""
    with client(ctx) as api:
        started = api.post(path, json=body)
        if not wait:
            emit(ctx, started)
            return
        result = follow_job(api, started["job_id"], label, not wants_json(ctx), speed=speed)
    shown(ctx, result)


# (ctx, host, name, action): what an action command of a host's network or pool runs.
Action = Callable[[typer.Context, str, str, str], None]


def action_commands(app: typer.Typer, run: Action, docs: Mapping[str, str]) -> None:
    """A command `ACTION NAME [--host]` per entry of `docs` (action: its help), running
    `run(ctx, host, name, action)`; `autostart` takes `--off` (the action noautostart)."""
    for action, doc in docs.items():
        auto = action == "autostart"
        command = _autostart_command(run) if auto else _action_command(run, action)
        command.__doc__ = doc
        app.command(action)(command)


def _action_command(run: Action, action: str) -> Callable[..., None]:
    def command(ctx: typer.Context, name: str, host: str = HOST_OPTION) -> None:
        run(ctx, host, name, action)

    return command


def _autostart_command(run: Action) -> Callable[..., None]:
    def command(
        ctx: typer.Context,
        name: str,
        off: bool = typer.Option(False, "--off", help="Disable autostart."),
        host: str = HOST_OPTION,
    ) -> None:
        run(ctx, host, name, "noautostart" if off else "autostart")

    return command
