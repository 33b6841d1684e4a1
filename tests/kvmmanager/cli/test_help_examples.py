"""Every `kvm-manager` command's `--help` ends with at least one example (issue 17: "let
someone try every CLI command's --help example"), and every example is a valid call of
that command: its arguments and flags parse with the command's own parameters (an unknown
flag, a missing argument or a value outside a flag's choices fails here)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from kvmmanager.cli.examples import EXAMPLES
from kvmmanager.cli.main import app


def _leaves(command: Any, path: tuple[str, ...] = ()) -> dict[str, Any]:
    if hasattr(command, "commands"):
        out: dict[str, Any] = {}
        for name, sub in command.commands.items():
            out.update(_leaves(sub, (*path, name)))
        return out
    return {" ".join(path): command}


LEAVES = _leaves(typer.main.get_command(app))


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_every_command_has_examples_and_no_example_names_a_missing_command() -> None:
    assert len(LEAVES) > 100
    assert sorted(set(LEAVES) - set(EXAMPLES)) == []
    assert sorted(set(EXAMPLES) - set(LEAVES)) == []


def test_every_example_is_in_its_help_and_parses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The local files the examples name exist (upload checks its FILE while parsing).
    monkeypatch.chdir(tmp_path)
    for example in (e for examples in EXAMPLES.values() for e in examples):
        for word in shlex.split(example):
            if word.startswith("./") or (word.endswith((".xml", ".tar")) and "/" not in word):
                (tmp_path / word).touch()
    failures = []
    for path, command in sorted(LEAVES.items()):
        # What --help prints after the options (rendered below for some commands).
        assert command.epilog and command.epilog.startswith("Example"), path
        for example in EXAMPLES[path]:
            assert example in command.epilog, (path, example)
            words = shlex.split(example)
            prefix = ["kvm-manager", *path.split()]
            assert words[: len(prefix)] == prefix, example
            # Parsing runs the parameters' own checks: unknown flags, missing arguments,
            # wrong types and choices raise here.
            try:
                with command.make_context(path.split()[-1], words[len(prefix) :]):
                    pass
            except Exception as exc:  # collect all, not only the first
                failures.append(f"{example}: {exc}")
    assert failures == []


# Rendering --help costs most of a second per command on a loaded machine: a sample of
# commands with arguments, repeated and required flags, and subgroups.
RENDERED = ["doctor", "agent exec", "alert email add", "schedule add", "vm create", "vm edit"]


@pytest.mark.parametrize("path", RENDERED)
def test_help_shows_the_examples(path: str) -> None:
    res = CliRunner().invoke(app, [*path.split(), "--help"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    shown = _flat(res.stdout)
    assert "Example" in shown, shown[-500:]
    for example in EXAMPLES[path]:
        assert _flat(example) in shown, (example, shown[-800:])


def test_the_installed_command_prints_an_example() -> None:
    """The real `kvm-manager` process shows the examples too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVMM_")}
    res = subprocess.run(
        [sys.executable, "-m", "kvmmanager.cli.main", "vm", "create", "--help"],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "300"},
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert _flat(EXAMPLES["vm create"][0]) in _flat(res.stdout)
