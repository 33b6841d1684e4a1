"""`kvm-manager agent-iso ...`: build, locate, deploy and install the guest-agent ISO.

`build` and `locate` work on this machine without a server; `status`, `deploy`,
`install` and `eject` ask the server (deploy runs as a job and shows its progress).
`vm install-agent` / `vm eject` delegate to `install_agent_command` / `eject_agent_command`.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from kvmmanager.cli.api_client import client
from kvmmanager.cli.helpers import HOST_OPTION, api_get, api_post, fmt_bytes, follow_job_in_lines
from kvmmanager.cli.output import emit, info, wants_json
from kvmmanager.cli.urls import q
from kvmmanager.core.config import get_settings
from kvmmanager.core.sanitize import inert

NAME = "agent-iso"
app = typer.Typer(help="The guest-agent ISO: build, locate, deploy, install.", no_args_is_help=True)

POOL_OPTION = typer.Option(None, "--pool", "-p", help="Pool (default: agent.iso_pool).")


@app.command("build")
def build(
    ctx: typer.Context,
    output: Path | None = typer.Option(
        None, "--output", "-o", help="File or directory (default: ./kvmmanager-guest-agent.iso)."
    ),
    epoch: int | None = typer.Option(
        None, "--source-date-epoch", help="Timestamp for every file (default: $SOURCE_DATE_EPOCH)."
    ),
) -> None:
    """Build the ISO here (pycdlib + nfpm); byte-reproducible for one SOURCE_DATE_EPOCH."""
    from kvmmanager.iso.builder import build_iso

    started = time.perf_counter()
    result = build_iso(output, source_date_epoch=epoch)
    took = time.perf_counter() - started
    emit(
        ctx,
        {
            "path": str(result.path),
            "version": result.version,
            "sha256": result.sha256,
            "size": result.size if wants_json(ctx) else fmt_bytes(result.size),
            "source_date_epoch": result.epoch,
            "files": len(result.files),
            "seconds": round(took, 3),
        },
    )


@app.command("locate")
def locate(ctx: typer.Context) -> None:
    """Which ISO this machine would deploy, and why each fallback was or was not used."""
    from kvmmanager.iso.locator import locate_iso

    loc = locate_iso(get_settings(), build=False)
    rows = [
        {
            "source": c.source,
            "used": c.used,
            "path": c.path,
            "version": c.version,
            "reason": c.reason,
        }
        for c in loc.candidates
    ]
    emit(ctx, rows, ["source", "used", "path", "version", "reason"])


@app.command("status")
def status(ctx: typer.Context, host: str = HOST_OPTION, pool: str | None = POOL_OPTION) -> None:
    """What the host's pool holds compared with the current ISO."""
    params = {"pool": pool} if pool else None
    emit(ctx, api_get(ctx, f"/api/hosts/{q(host)}/agent-iso", params=params))


@app.command("deploy")
def deploy(
    ctx: typer.Context,
    host: str = HOST_OPTION,
    pool: str | None = POOL_OPTION,
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow the job to its end."),
    local: bool = typer.Option(
        False, "--local", help="No server: connect to libvirt here (--uri) and deploy."
    ),
    uri: str | None = typer.Option(None, "--uri", help="With --local: the libvirt URI."),
) -> None:
    """Upload the ISO into the host's pool through libvirt (creates 'default' if missing)."""
    if local:
        import asyncio

        from kvmmanager.services.guest.iso_deploy import deploy_local

        settings = get_settings()
        target = uri or settings.libvirt.default_uri
        # No server decides the host: say which libvirt this run changes.
        info(f"--local: deploying through libvirt at {target} (no server)")
        emit(ctx, asyncio.run(deploy_local(target, settings, pool)).to_dict())
        return
    with client(ctx) as api:
        started = api.post(f"/api/hosts/{q(host)}/agent-iso/deploy", json={"pool": pool})
        if not wait:
            emit(ctx, started)
            return
        result = follow_job_in_lines(api, started["job_id"], not wants_json(ctx))
    emit(ctx, result)


def install_agent_command(
    ctx: typer.Context, vm: str, host: str = "local", pool: str | None = None
) -> None:
    """What `vm install-agent VM` runs: ISO current on the host, channel, CD-ROM, disc."""
    with client(ctx) as api:
        result = api.post(f"/api/hosts/{q(host)}/agent-iso/install/{q(vm)}", json={"pool": pool})
    if wants_json(ctx):
        emit(ctx, result)
        return
    for message in result["messages"]:
        info(message)
    print("In the guest, as root:")
    for line in result["guest_commands"]:
        print(f"  {inert(line)}")


def eject_agent_command(ctx: typer.Context, vm: str, host: str = "local") -> None:
    """What `vm eject VM` runs for the agent ISO."""
    result = api_post(ctx, f"/api/hosts/{q(host)}/agent-iso/eject/{q(vm)}")
    if wants_json(ctx):
        emit(ctx, result)
    else:
        info(result["message"])


@app.command("install")
def install(
    ctx: typer.Context, vm: str, host: str = HOST_OPTION, pool: str | None = POOL_OPTION
) -> None:
    """Put the agent ISO into VM (adding the channel and a CD-ROM if needed)."""
    install_agent_command(ctx, vm, host, pool)


@app.command("eject")
def eject(ctx: typer.Context, vm: str, host: str = HOST_OPTION) -> None:
    """Take the agent ISO out of VM's CD-ROM drive."""
    eject_agent_command(ctx, vm, host)
