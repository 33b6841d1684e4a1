"""The platform's CLI commands against a live server: users, tokens, login, config, errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import typer
from typer.testing import CliRunner

from kvmmanager import __version__
from kvmmanager.cli.api_client import credentials_file
from kvmmanager.cli.main import app as cli_app
from kvmmanager.cli.main import command_modules


def test_commands_are_discovered() -> None:
    names = {c.name for c in cli_app.registered_commands} | {
        g.name for g in cli_app.registered_groups
    }
    assert {"serve", "login", "config", "user", "token"} <= names
    assert "kvmmanager.cli.commands.user" in command_modules()


def test_user_add_list_passwd_remove(cli: Callable[..., Any]) -> None:
    r = cli(
        "user",
        "add",
        "kvmm-t-plat-cli",
        "--role",
        "operator",
        "--password-stdin",
        input="long-enough\n",
    )
    assert r.exit_code == 0, r.output
    r = cli("--json", "user", "list")
    assert r.exit_code == 0
    users = {u["username"]: u["role"] for u in json.loads(r.stdout)}
    assert users["kvmm-t-plat-cli"] == "operator"
    r = cli("user", "list")
    assert "kvmm-t-plat-cli" in r.stdout and "ROLE" in r.stdout
    r = cli("user", "passwd", "kvmm-t-plat-cli", "--password-stdin", input="another-pass\n")
    assert r.exit_code == 0, r.output
    r = cli("user", "remove", "kvmm-t-plat-cli", "--yes")
    assert r.exit_code == 0
    r = cli("--json", "user", "list")
    assert "kvmm-t-plat-cli" not in r.stdout


def test_errors_are_one_line_with_exit_code(cli: Callable[..., Any]) -> None:
    r = cli("user", "remove", "kvmm-t-plat-ghost", "--yes")
    assert r.exit_code == 4  # NotFound
    assert r.stderr == "error: no user 'kvmm-t-plat-ghost'\n"
    assert r.stdout == ""
    r = cli("user", "add", "bad/name", "--password-stdin", input="long-enough\n")
    assert r.exit_code == 2 and r.stderr.startswith("error: ")
    r = cli("user", "list", env_extra={"KVMM_TOKEN": "kvmm_wrong"})
    assert r.exit_code == 9 and r.stderr == "error: invalid API token\n"


def test_unreachable_server(cli: Callable[..., Any]) -> None:
    r = cli("user", "list", env_extra={"KVMM_URL": "http://127.0.0.1:9"})
    assert r.exit_code == 6
    assert r.stderr.startswith("error: cannot reach kvm-manager at http://127.0.0.1:9")


def test_token_create_list_revoke(cli: Callable[..., Any], live_server: Any) -> None:
    r = cli("token", "create", "kvmm-t-plat-cli-tok", "--expires-days", "1")
    assert r.exit_code == 0, r.output
    secret = r.stdout.strip()
    assert secret.startswith("kvmm_")
    r = cli("--json", "token", "list")
    [tok] = [t for t in json.loads(r.stdout) if t["name"] == "kvmm-t-plat-cli-tok"]
    assert secret not in r.stdout and tok["expires_at"]
    r = cli("user", "list", env_extra={"KVMM_TOKEN": secret})
    assert r.exit_code == 0
    r = cli("token", "revoke", str(tok["id"]))
    assert r.exit_code == 0
    r = cli("user", "list", env_extra={"KVMM_TOKEN": secret})
    assert r.exit_code == 9


def test_login_saves_a_private_token(live_server: Any) -> None:
    password = live_server.manager.initial_admin_password
    runner = CliRunner()
    env = {"KVMM_URL": live_server.url}
    # The generated first password is changed at the first login: the next stdin line.
    new = password + "-changed"
    r = runner.invoke(
        cli_app,
        ["login", "-u", "admin", "--password-stdin"],
        input=f"{password}\n{new}\n",
        env=env,
    )
    assert r.exit_code == 0, r.output
    assert "must be changed" in r.output
    password = new
    path = credentials_file()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["url"] == live_server.url and saved["username"] == "admin"
    # Later commands need no token in the environment.
    r = runner.invoke(cli_app, ["--json", "user", "list"], env={"KVMM_URL": live_server.url})
    assert r.exit_code == 0, r.output
    # Logging in again revokes the token saved by the previous login.
    r = runner.invoke(
        cli_app, ["login", "-u", "admin", "--password-stdin"], input=password + "\n", env=env
    )
    assert r.exit_code == 0, r.output
    tokens = {t.id: t.revoked_at for t, _ in live_server.manager.users.list_tokens("admin")}
    assert tokens[saved["id"]] is not None
    assert tokens[json.loads(path.read_text())["id"]] is None
    r = runner.invoke(
        cli_app, ["login", "-u", "admin", "--password-stdin"], input="wrong\n", env=env
    )
    assert r.exit_code == 9 and r.stderr == "error: invalid username or password\n"


def test_config_show_redacts_secrets(settings: Any, monkeypatch: Any) -> None:
    import tomllib

    from kvmmanager.core.config import get_settings

    monkeypatch.setenv("KVMM_METRICS__PROMETHEUS_TOKEN", "sekrit-token")
    monkeypatch.setenv("KVMM_DATABASE__URL", "postgresql://kvmm:dbpass@db/kvmm")
    get_settings.cache_clear()
    runner = CliRunner()
    r = runner.invoke(cli_app, ["config", "show"])
    assert r.exit_code == 0, r.output
    assert "sekrit-token" not in r.stdout and "dbpass" not in r.stdout
    data = tomllib.loads(r.stdout)
    assert data["libvirt"]["default_uri"] == "test:///default"
    assert data["metrics"]["prometheus_token"] == "***"
    r = runner.invoke(cli_app, ["config", "show", "--json"])
    assert json.loads(r.stdout)["database"]["url"] == "postgresql://kvmm:***@db/kvmm"


def test_reset_admin_local(settings: Any) -> None:
    runner = CliRunner()
    r = runner.invoke(cli_app, ["user", "reset-admin"])
    assert r.exit_code == 2 and "--local" in r.stderr
    # Issue 17's try: with no database at the data dir, --local made a new empty one.
    db = settings.data_dir / "kvm-manager.db"
    r = runner.invoke(cli_app, ["user", "reset-admin", "--local"])
    assert r.exit_code == 4, r.output
    assert f"no database at {db}; set KVMM_DATA_DIR" in r.stderr
    assert not settings.data_dir.exists()
    from kvmmanager.db import migrate
    from kvmmanager.services.manager import Manager

    m = Manager(settings)
    migrate.upgrade(m.engine)
    r = runner.invoke(cli_app, ["user", "reset-admin", "--local"])
    assert r.exit_code == 0, r.output
    assert f"database: {db}" in r.stderr
    password = r.stdout.strip().rsplit(" ", 1)[-1]
    assert m.users.authenticate("admin", password).role == "admin"
    m.engine.dispose()


def test_every_command_takes_json_after_its_name(cli: Any) -> None:
    """`kvm-manager vm list --json` (what the README shows) works like `--json vm list`,
    and every leaf command lists --json in its --help."""
    res = cli("host", "list", "--json")
    assert res.exit_code == 0, res.stderr
    assert [h["name"] for h in json.loads(res.stdout)] == ["local"]

    def leaves(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                yield from leaves(cmd, (*path, name))
            else:
                yield (*path, name), cmd

    every = list(leaves(typer.main.get_command(cli_app)))
    missing = [p for p, cmd in every if not any("--json" in x.opts for x in cmd.params)]
    assert len(every) > 100 and not missing
    assert "--json" in cli("vm", "list", "--help").stdout


def test_version_prints_the_package_version() -> None:
    """`kvm-manager --version` (issue 20): the installed package's version, exit 0, with no
    server, login or config needed (run as a real process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVMM_")}
    env["KVMM_URL"] = "http://127.0.0.1:9"  # nothing listens: the version needs no server
    res = subprocess.run(
        [sys.executable, "-m", "kvmmanager.cli.main", "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert (res.returncode, res.stdout, res.stderr) == (0, f"kvm-manager {__version__}\n", "")
