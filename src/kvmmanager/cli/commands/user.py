"""`kvm-manager user add/passwd/list/remove` (through the API) and `reset-admin --local`."""

from __future__ import annotations

from typing import Any

import typer
from sqlalchemy.engine import make_url

from kvmmanager.cli.api_client import client
from kvmmanager.cli.commands.login import ask_password, read_password
from kvmmanager.cli.helpers import act_and_say
from kvmmanager.cli.output import emit, info
from kvmmanager.core.config import Settings
from kvmmanager.core.errors import InvalidInput, NotFound
from kvmmanager.db.models import ROLES

NAME = "user"
app = typer.Typer(help="Manage users (admin).", no_args_is_help=True)

COLUMNS = ["username", "role", "disabled", "created_at"]


def _new_password(password_stdin: bool) -> str:
    password = read_password(password_stdin, "New password: ")
    if not password_stdin and ask_password("Repeat: ") != password:
        raise InvalidInput("the passwords do not match", field="password")
    return password


@app.command("add")
def add(
    ctx: typer.Context,
    username: str,
    role: str = typer.Option("viewer", help="admin, operator or viewer."),
    password_stdin: bool = typer.Option(False, "--password-stdin"),
) -> None:
    """Create a user."""
    # Before the password: asking for one only to refuse the role wastes it, and an empty
    # --password-stdin would hide the real mistake behind "a password is required".
    if role not in ROLES:
        raise InvalidInput(f"--role {role!r} is not a role: use {', '.join(ROLES)}", field="role")
    password = _new_password(password_stdin)
    with client(ctx) as api:
        user = api.post(
            "/api/users", json={"username": username, "password": password, "role": role}
        )
    emit(ctx, user)


@app.command("passwd")
def passwd(
    ctx: typer.Context,
    username: str,
    password_stdin: bool = typer.Option(False, "--password-stdin"),
) -> None:
    """Set a user's password (ends their sessions)."""
    password = _new_password(password_stdin)
    with client(ctx) as api:
        user = api.patch(f"/api/users/{username}", json={"password": password})
    emit(ctx, user)


@app.command("list")
def list_users(ctx: typer.Context) -> None:
    """List users."""
    with client(ctx) as api:
        users: list[dict[str, Any]] = api.get("/api/users")
    emit(ctx, users, COLUMNS)


@app.command("remove")
def remove(
    ctx: typer.Context,
    username: str,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Delete a user and their tokens."""
    if not yes:
        typer.confirm(f"Delete user {username}?", abort=True)
    act_and_say(ctx, "DELETE", f"/api/users/{username}", f"deleted user {username}")


def _database_of(settings: Settings) -> str:
    """Which database --local changes, in words; refused when the SQLite file is not
    there: opening it would create a new, empty database (and its directory) that no
    server uses, and the admin of the real one would keep the password they forgot."""
    if settings.database.url:
        return make_url(settings.database.url).render_as_string(hide_password=True)
    path = settings.data_dir / "kvm-manager.db"
    if not path.is_file():
        raise NotFound(
            f"no database at {path}; set KVMM_DATA_DIR to the server's data dir "
            "(or KVMM_DATABASE__URL to its database)",
            field="KVMM_DATA_DIR",
        )
    return str(path)


@app.command("reset-admin")
def reset_admin(
    local: bool = typer.Option(
        False, "--local", help="Work on the database directly (the server may be down)."
    ),
    username: str = typer.Option("admin", help="The admin account to reset or create."),
) -> None:
    """Give the admin a new random password, printed once and written to the 0600 file.

    --local changes the database of KVMM_DATA_DIR (or KVMM_DATABASE__URL), named on
    stderr; it must exist already (run it as the server's user, with its settings)."""
    if not local:
        raise InvalidInput(
            "reset-admin works on the local database only: pass --local", field="local"
        )
    from kvmmanager.core.config import get_settings
    from kvmmanager.services.manager import Manager

    settings = get_settings()
    info(f"database: {_database_of(settings)}")
    manager = Manager(settings)
    try:
        from kvmmanager.db import migrate

        # Under the lock: a server starting now may be migrating the same database.
        with migrate.exclusive(manager.engine):
            migrate.upgrade(manager.engine)
        password = manager.users.reset_admin(username)
        path = manager.users.initial_password_file()
    finally:
        manager.engine.dispose()
    typer.echo(f"new password for {username}: {password}")
    info(f"(also written to {path})")
