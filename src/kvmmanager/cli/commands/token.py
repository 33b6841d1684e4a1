"""`kvm-manager token create/list/revoke`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import typer

from kvmmanager.cli.helpers import act_and_say, api_get, api_post
from kvmmanager.cli.output import emit, info, wants_json

NAME = "token"
app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)

COLUMNS = [
    "id",
    "name",
    "username",
    "prefix",
    "created_at",
    "last_used_at",
    "expires_at",
    "revoked_at",
]


@app.command("create")
def create(
    ctx: typer.Context,
    name: str,
    expires_days: int | None = typer.Option(None, "--expires-days", min=1, max=3650),
    user: str | None = typer.Option(None, "--user", help="Owner (admin only)."),
) -> None:
    """Create a token; the secret is printed once."""
    body: dict[str, Any] = {"name": name}
    if expires_days:
        body["expires_at"] = (datetime.now(UTC) + timedelta(days=expires_days)).isoformat()
    if user:
        body["username"] = user
    created = api_post(ctx, "/api/tokens", body)
    if wants_json(ctx):
        emit(ctx, created)
        return
    typer.echo(created["token"])
    info(f"token {created['id']} ({created['name']}): shown only now, store it safely")


@app.command("list")
def list_tokens(
    ctx: typer.Context,
    all_users: bool = typer.Option(False, "--all", help="Every user's tokens (admin)."),
) -> None:
    """List tokens (never their secrets)."""
    tokens = api_get(ctx, "/api/tokens", params={"all": all_users})
    emit(ctx, tokens, COLUMNS)


@app.command("revoke")
def revoke(ctx: typer.Context, token_id: int) -> None:
    """Revoke a token at once."""
    act_and_say(ctx, "DELETE", f"/api/tokens/{token_id}", f"revoked token {token_id}")
