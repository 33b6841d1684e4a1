"""`kvm-manager export ...` / `kvm-manager import ...`: VMs as libvirt domain XML."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from kvmmanager.cli.api_client import client
from kvmmanager.cli.helpers import api_post, follow_job_in_lines
from kvmmanager.cli.output import emit, info, wants_json
from kvmmanager.cli.urls import q
from kvmmanager.core.errors import InvalidInput

NAME = "export"
app = typer.Typer(help="Export and import VMs as libvirt XML.", no_args_is_help=True)
HOST_OPTION = typer.Option("local", "--host", "-H", envvar="KVMM_HOST", help="Host name.")


def _mapping(items: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise InvalidInput(f"{option} must look like OLD=NEW", field=option)
        out[old] = new
    return out


@app.command("xml")
def export_xml(
    ctx: typer.Context,
    vm: str,
    host: str = HOST_OPTION,
    output: Path | None = typer.Option(None, "--output", "-o", help="File (default stdout)."),
) -> None:
    """Write the VM's persistent libvirt XML (with its tags and owner, no secrets)."""
    with client(ctx) as api:
        xml = api.get(f"/api/hosts/{q(host)}/vms/{q(vm)}/export")["xml"]
    if output is None:
        sys.stdout.write(xml)
        return
    output.write_text(xml)
    info(f"wrote {output}")


@app.command("import")
def import_xml(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="A libvirt domain XML file ('-' for stdin)."),
    host: str = HOST_OPTION,
    name: str | None = typer.Option(None, "--name", help="New name (refused if taken)."),
    new_identity: bool = typer.Option(False, "--new-identity", help="New UUID and MACs."),
    network: list[str] = typer.Option([], "--network", help="Remap OLD=NEW (repeat)."),
    pool: list[str] = typer.Option([], "--pool", help="Remap OLD=NEW (repeat)."),
) -> None:
    """Define a VM from a libvirt XML; a taken name becomes NAME-2 unless --name is given."""
    try:
        xml = sys.stdin.read() if str(file) == "-" else file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {file}: {exc}", field="FILE") from None
    body = {
        "xml": xml,
        "name": name,
        "new_identity": new_identity,
        "network_map": _mapping(network, "--network"),
        "pool_map": _mapping(pool, "--pool"),
    }
    res = api_post(ctx, f"/api/hosts/{q(host)}/imports", body)
    _print_import(ctx, res)


def _print_import(ctx: typer.Context, res: dict) -> None:
    vm = res["vm"]
    for warning in res["warnings"]:
        info(f"warning: {warning}")
    if wants_json(ctx):
        emit(ctx, res)
        return
    row = {k: vm[k] for k in ("name", "host", "uuid", "state")}
    emit(ctx, {**row, "renamed_from": res["renamed_from"], "new_uuid": res["new_uuid"]})


@app.command("bundle")
def export_bundle(
    ctx: typer.Context,
    vm: str,
    output: Path = typer.Option(..., "--output", "-o", help="Bundle file to write (.tar.gz)."),
    host: str = HOST_OPTION,
    keep: bool = typer.Option(False, "--keep", help="Keep the copy on the server too."),
) -> None:
    """Export a shut-off VM with its disks (XML + volumes + sha256 manifest) to a file."""
    with client(ctx) as api:
        started = api.post(f"/api/hosts/{q(host)}/vms/{q(vm)}/export/bundle")
        result = follow_job_in_lines(api, started["job_id"], not wants_json(ctx))
        bundle_id = result["bundle_id"]
        partial = output.with_name(output.name + ".part")
        try:
            with (
                api.stream("GET", f"/api/exports/{q(bundle_id)}") as response,
                open(partial, "wb") as fh,
            ):
                for chunk in response.iter_bytes():
                    fh.write(chunk)
            partial.replace(output)
        finally:
            partial.unlink(missing_ok=True)
        if not keep:
            api.delete(f"/api/exports/{q(bundle_id)}")
    if wants_json(ctx):
        emit(ctx, {**result, "file": str(output)})
        return
    disks = ", ".join(f"{d['target']} ({d['bytes']} bytes)" for d in result["manifest"]["disks"])
    info(f"wrote {output} ({result['bytes']} bytes; disks: {disks or 'none'})")


@app.command("import-bundle")
def import_bundle(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="A bundle written by `export bundle`."),
    pool: str = typer.Option(..., "--pool", "-p", help="Pool for the disk volumes."),
    host: str = HOST_OPTION,
    name: str | None = typer.Option(None, "--name", help="New name (refused if taken)."),
    new_identity: bool = typer.Option(False, "--new-identity", help="New UUID and MACs."),
    network: list[str] = typer.Option([], "--network", help="Remap OLD=NEW (repeat)."),
) -> None:
    """Import a bundle: its disks become new volumes in POOL, checked against the
    manifest's checksums before the VM is defined."""
    _mapping(network, "--network")
    params: dict[str, object] = {"pool": pool, "new_identity": new_identity, "network": network}
    if name is not None:
        params["name"] = name
    try:
        fh = open(file, "rb")  # noqa: SIM115 - handed to httpx, closed below
    except OSError as exc:
        raise InvalidInput(f"cannot read {file}: {exc.strerror}", field="FILE") from None
    with fh, client(ctx) as api:
        started = api.post(
            f"/api/hosts/{q(host)}/imports/bundle",
            params=params,
            content=fh,
            headers={"Content-Type": "application/gzip"},
        )
        res = follow_job_in_lines(api, started["job_id"], not wants_json(ctx))
    _print_import(ctx, res)
