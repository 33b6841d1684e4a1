"""`kvm-manager login`: log in once, keep an API token for later commands (0600 file)."""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import sys

import typer

from kvmmanager.cli.api_client import ApiClient, load_credentials, save_credentials
from kvmmanager.cli.output import info, state
from kvmmanager.core.errors import InvalidInput, NotFound


def _has_terminal() -> bool:
    """What getpass needs to ask without echo: the controlling terminal, or a stdin that
    is one. Without either it falls back to reading stdin with a GetPassWarning."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return sys.stdin.isatty()
    os.close(fd)
    return True


def ask_password(prompt: str) -> str:
    """`prompt` on the terminal, echo off; refused (exit 2) when there is no terminal."""
    if not _has_terminal():
        raise InvalidInput(
            "no terminal to ask for the password: use --password-stdin", field="password"
        )
    return getpass.getpass(prompt)


def read_password(password_stdin: bool, prompt: str = "Password: ") -> str:
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else ask_password(prompt)
    if not password:
        raise InvalidInput("a password is required", field="password")
    return password


def _change_generated_password(
    api: ApiClient, username: str, password: str, password_stdin: bool, headers: dict[str, str]
) -> dict[str, str]:
    """The first admin's generated password may only be changed: ask for the new one (the
    next line of stdin with --password-stdin) and return the new session's CSRF header."""
    info(f"the password of {username!r} was generated and must be changed now")
    if password_stdin:
        new = sys.stdin.readline().rstrip("\r\n")
        if not new:
            raise InvalidInput(
                "the password must be changed before first use: give the new password on "
                "the line after the current one (--password-stdin), or log in on a terminal",
                field="new_password",
            )
    else:
        new = ask_password("New password: ")
        if ask_password("New password again: ") != new:
            raise InvalidInput("the passwords do not match", field="new_password")
    changed = api.post(
        "/api/auth/password",
        json={"current_password": password, "new_password": new},
        headers=headers,
    )
    return {"X-CSRF-Token": changed["csrf_token"]}


def login(
    ctx: typer.Context,
    username: str = typer.Option(None, "--username", "-u", help="Default: prompt."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from stdin (scripts)."
    ),
    token_name: str = typer.Option(None, "--token-name", help="Default: cli@<hostname>."),
) -> None:
    """Log in and save an API token in ~/.config/kvm-manager/credentials.json."""
    if not username:
        username = typer.prompt("Username")
    password = read_password(password_stdin)
    name = token_name or f"cli@{socket.gethostname()}"[:64]
    with ApiClient(state(ctx).url, anonymous=True) as api:
        session = api.post("/api/auth/login", json={"username": username, "password": password})
        headers = {"X-CSRF-Token": session["csrf_token"]}
        if session.get("password_change_required"):
            headers = _change_generated_password(api, username, password, password_stdin, headers)
        created = api.post("/api/tokens", json={"name": name}, headers=headers)
        old = load_credentials()
        if old.get("url") == api.url and old.get("username") == username and old.get("id"):
            # Logging in again replaces the saved token: do not leave the old one alive.
            with contextlib.suppress(NotFound):
                api.delete(f"/api/tokens/{int(old['id'])}", headers=headers)
        api.post("/api/auth/logout", headers=headers)
        path = save_credentials(api.url, created["token"], username, created["id"])
    info(f"logged in to {api.url} as {username} ({session['role']}); token saved in {path}")


def register(root: typer.Typer) -> None:
    root.command("login")(login)
