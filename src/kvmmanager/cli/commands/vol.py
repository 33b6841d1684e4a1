"""`kvm-manager vol ...`: volumes of a pool, with streamed upload and download.

Upload and download never hold the file in memory: the file is read (or written) one
chunk at a time while the HTTP body streams, with a progress bar on stderr.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.progress import (
    Progress,
)

from kvmmanager.cli.api_client import ApiClient, client
from kvmmanager.cli.helpers import (
    HOST_OPTION,
    act_and_say,
    api_get,
    api_post,
    emit_sized,
    fmt_bytes,
    progress,
    start_job,
)
from kvmmanager.cli.output import emit, info, wants_json
from kvmmanager.cli.urls import q
from kvmmanager.core.errors import Conflict, InvalidInput, KvmmError, NotFound

NAME = "vol"
app = typer.Typer(
    help="Volumes: list, create, delete, resize, clone, upload, download.", no_args_is_help=True
)

CHUNK = 1 << 20
COLUMNS = ["name", "format", "capacity", "allocation", "used_by", "path"]
# Volume upload/download can take long between bytes (libvirt finishing, slow disks).
TRANSFER_TIMEOUT = 600.0


def _base(host: str, pool: str) -> str:
    return f"/api/hosts/{q(host)}/pools/{q(pool)}/volumes"


def _emit(ctx: typer.Context, data: Any) -> None:
    emit_sized(ctx, data, COLUMNS, ("capacity", "allocation", "physical"))


@app.command("list")
def list_volumes(ctx: typer.Context, pool: str, host: str = HOST_OPTION) -> None:
    """List the volumes of a pool and the VMs using them."""
    _emit(ctx, api_get(ctx, _base(host, pool)))


@app.command("show")
def show(ctx: typer.Context, pool: str, name: str, host: str = HOST_OPTION) -> None:
    """Show one volume."""
    _emit(ctx, api_get(ctx, f"{_base(host, pool)}/{q(name)}"))


@app.command("create")
def create(
    ctx: typer.Context,
    pool: str,
    name: str,
    capacity: str | None = typer.Option(None, "--capacity", "-c", help="e.g. 20G, 512MiB."),
    format: str = typer.Option("qcow2", "--format", "-f", help="qcow2 or raw."),
    backing: str | None = typer.Option(None, "--backing", help="Backing volume (qcow2)."),
    backing_pool: str | None = typer.Option(None, "--backing-pool"),
    preallocate: bool = typer.Option(False, "--preallocate"),
    host: str = HOST_OPTION,
) -> None:
    """Create a volume (capacity defaults to the backing volume's)."""
    body: dict[str, Any] = {
        "name": name,
        "capacity": capacity,
        "format": format,
        "preallocate": preallocate,
    }
    if backing:
        body["backing"] = {"volume": backing, "pool": backing_pool}
    _emit(ctx, api_post(ctx, _base(host, pool), body))


@app.command("delete")
def delete(ctx: typer.Context, pool: str, name: str, host: str = HOST_OPTION) -> None:
    """Delete a volume (refused while a VM uses it)."""
    act_and_say(ctx, "DELETE", f"{_base(host, pool)}/{q(name)}", f"volume {name} deleted")


@app.command("resize")
def resize(
    ctx: typer.Context,
    pool: str,
    name: str,
    capacity: str,
    shrink: bool = typer.Option(False, "--shrink", help="Allow shrinking (loses data)."),
    host: str = HOST_OPTION,
) -> None:
    """Set a volume's capacity, e.g. `vol resize default disk.qcow2 40G`."""
    with client(ctx) as api:
        body = {"capacity": capacity, "shrink": shrink}
        _emit(ctx, api.post(f"{_base(host, pool)}/{q(name)}/resize", json=body))


@app.command("clone")
def clone(
    ctx: typer.Context,
    pool: str,
    name: str,
    new_name: str,
    target_pool: str | None = typer.Option(None, "--target-pool"),
    format: str | None = typer.Option(None, "--format", "-f", help="qcow2 or raw."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow the job to its end."),
    host: str = HOST_OPTION,
) -> None:
    """Copy a volume (a job: prints its id with --no-wait)."""
    body = {"name": new_name, "target_pool": target_pool, "format": format}
    path = f"{_base(host, pool)}/{q(name)}/clone"
    start_job(ctx, path, body, f"clone {name}", wait=wait, speed=True, shown=_emit)


def _guess_format(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".iso": "iso", ".qcow2": "qcow2", ".img": "raw", ".raw": "raw"}.get(suffix, "raw")


def _file_chunks(path: Path, bar: Progress, task: Any) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            bar.advance(task, len(chunk))
            yield chunk


def _preflight(api: ApiClient, host: str, pool: str, name: str, overwrite: bool) -> None:
    api.get(f"/api/hosts/{q(host)}/pools/{q(pool)}")
    try:
        api.get(f"{_base(host, pool)}/{q(name)}")
    except NotFound:
        if overwrite:
            raise
        return
    if not overwrite:
        raise Conflict(
            f"volume '{name}' already exists in pool '{pool}' (--overwrite writes into it)",
            field="volume",
        )


@app.command("upload")
def upload(
    ctx: typer.Context,
    pool: str,
    name: str,
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
    format: str | None = typer.Option(
        None, "--format", "-f", help="raw, iso or qcow2 (default: from the file name)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Write into the existing volume instead of creating it."
    ),
    host: str = HOST_OPTION,
) -> None:
    """Upload a local file into a new volume (or, with --overwrite, an existing one)."""
    size = file.stat().st_size
    if size == 0:
        raise InvalidInput(f"{file} is empty", field="file")
    params: dict[str, Any] = {"create": not overwrite, "format": format or _guess_format(file)}
    with client(ctx) as api:
        # The server refuses a bad upload before reading the body, but an HTTP/1.1 client
        # only reads that answer after sending everything: ask first, fail fast and clearly.
        _preflight(api, host, pool, name, overwrite)
    with client(ctx) as api, progress() as bar:
        task = bar.add_task(f"upload {file.name}", total=size, visible=not wants_json(ctx))
        result = api.put(
            f"{_base(host, pool)}/{q(name)}/content",
            params=params,
            content=_file_chunks(file, bar, task),
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
            timeout=TRANSFER_TIMEOUT,
        )
    _emit(ctx, result["volume"] if not wants_json(ctx) else result)


@app.command("download")
def download(
    ctx: typer.Context,
    pool: str,
    name: str,
    file: Path = typer.Argument(..., dir_okay=False, help="Where to write the volume's bytes."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
    host: str = HOST_OPTION,
) -> None:
    """Download a volume into a local file (written as FILE.part, renamed when complete)."""
    if file.exists() and not force:
        raise InvalidInput(f"{file} exists (use --force to overwrite it)", field="file")
    partial = file.with_name(file.name + ".part")
    done = 0
    try:
        with (
            client(ctx) as api,
            api.stream(
                "GET", f"{_base(host, pool)}/{q(name)}/content", timeout=TRANSFER_TIMEOUT
            ) as response,
            progress() as bar,
        ):
            total = int(response.headers.get("content-length") or 0) or None
            task = bar.add_task(f"download {name}", total=total, visible=not wants_json(ctx))
            with partial.open("wb") as fh:
                for chunk in response.iter_bytes(CHUNK):
                    fh.write(chunk)
                    done += len(chunk)
                    bar.advance(task, len(chunk))
        if total is not None and done != total:
            raise KvmmError(f"download ended after {done} of {total} bytes")
        os.replace(partial, file)
    except httpx.HTTPError as exc:
        partial.unlink(missing_ok=True)
        raise KvmmError(f"download of {name} failed after {done} bytes: {exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    result = {"volume": name, "pool": pool, "file": str(file), "bytes": done}
    if wants_json(ctx):
        emit(ctx, result)
    else:
        info(f"{fmt_bytes(done)} written to {file}")
