"""`kvm-manager instances`: the manager instances sharing the server's database."""

from __future__ import annotations

import typer

from kvmmanager.cli.helpers import api_get
from kvmmanager.cli.output import emit

COLUMNS = [
    "id",
    "hostname",
    "address",
    "version",
    "pid",
    "started_at",
    "last_seen",
    "alive",
    "this",
    "lease_holder",
]


def register(root: typer.Typer) -> None:
    @root.command("instances")
    def instances(ctx: typer.Context) -> None:
        """List the manager instances that share this database (alive: heartbeat < 15 s;
        lease_holder: runs the schedules, alerts and other once-only work)."""
        rows = api_get(ctx, "/api/instances")
        emit(ctx, rows, COLUMNS)
