"""`kvm-manager instances`: the manager instances sharing the server's database."""

from __future__ import annotations

import typer

from kvmmanager.cli.api_client import client
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
]


def register(root: typer.Typer) -> None:
    @root.command("instances")
    def instances(ctx: typer.Context) -> None:
        """List the manager instances that share this database (alive: heartbeat < 15 s)."""
        with client(ctx) as api:
            rows = api.get("/api/instances")
        emit(ctx, rows, COLUMNS)
