"""`kvm-manager user add` refusals that come before the server is asked (issue 17's try)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from kvmmanager.cli.main import app as cli_app

SRC = str(Path(__file__).resolve().parents[3] / "src")


def test_add_refuses_an_unknown_role_before_reading_the_password() -> None:
    r = CliRunner().invoke(
        cli_app, ["user", "add", "kvmm-t-usr", "--role", "god", "--password-stdin"], input=""
    )
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert "--role" in r.stderr and "'god'" in r.stderr and "operator" in r.stderr
    assert "password" not in r.stderr


def test_add_without_a_terminal_says_to_use_password_stdin() -> None:
    # A new session has no controlling terminal; stdin is not one either. getpass used to
    # print GetPassWarning lines and read stdin with echo on.
    env = {**os.environ, "PYTHONPATH": SRC, "KVMM_URL": "http://127.0.0.1:9"}
    p = subprocess.run(
        [sys.executable, "-c", "from kvmmanager.cli.main import main; main()",
         "user", "add", "kvmm-t-usr", "--role", "operator"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
        start_new_session=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "no terminal to ask for the password: use --password-stdin" in p.stderr
    assert "Warning" not in p.stderr and "Traceback" not in p.stderr
