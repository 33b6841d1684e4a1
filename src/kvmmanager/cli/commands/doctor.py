"""`kvm-manager doctor`: is this host ready? Each check: ok / warn / fail + the fix.

Without --host it checks libvirt here (settings.libvirt.default_uri, or --uri / a URI
given to --host) with its own connection, so it works when no server runs. With
--host NAME it asks the server for that host's report. Exit code 1 when any check fails.
"""

from __future__ import annotations

from typing import Any

import typer

from kvmmanager.cli.helpers import api_get
from kvmmanager.cli.output import emit, wants_json
from kvmmanager.cli.urls import q
from kvmmanager.core.config import get_settings

FAIL_EXIT = 1


def _print(ctx: typer.Context, report: dict[str, Any], json_flag: bool) -> None:
    if wants_json(ctx, json_flag):
        emit(ctx, report, json_flag=True)
        return
    rows = [
        {
            "status": c["status"].upper(),
            "check": c["name"],
            "message": c["message"],
            "fix": c["fix"],
        }
        for c in report["checks"]
    ]
    emit(
        ctx,
        rows,
        ["status", "check", "message", "fix"],
        title=f"{report['host']} ({report['uri']})",
    )
    # Where the agent ISO would come from: every fallback and why it was (not) used.
    for c in report["checks"]:
        candidates = (c.get("data") or {}).get("candidates")
        if c["name"] == "agent_iso_local" and candidates:
            emit(ctx, candidates, ["source", "used", "path", "reason"], title="agent ISO location")
    print(f"overall: {report['status']}")


def register(root: typer.Typer) -> None:
    @root.command("doctor")
    def doctor(
        ctx: typer.Context,
        host: str | None = typer.Option(
            None, "--host", "-H", help="A host of the server, or a libvirt URI to check here."
        ),
        uri: str | None = typer.Option(None, "--uri", help="libvirt URI to check here."),
        network: str = typer.Option("default", "--network", help="Network to check."),
        pool: str | None = typer.Option(None, "--pool", help="Pool (default: agent.iso_pool)."),
        json_flag: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Check libvirt, KVM, networks, storage and the agent ISO; print the fixes."""
        if host is not None and "://" not in host:
            params: dict[str, str] = {"network": network}
            if pool:
                params["pool"] = pool
            report = api_get(ctx, f"/api/hosts/{q(host)}/health", params=params)
        else:
            from kvmmanager.services.hosts.doctor import run_local

            settings = get_settings()
            target = uri or host or settings.libvirt.default_uri
            report = run_local(target, settings, network=network, pool=pool).to_dict()
        _print(ctx, report, json_flag)
        if report["status"] == "fail":
            raise typer.Exit(FAIL_EXIT)
