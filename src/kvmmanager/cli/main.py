"""`kvm-manager`: the command line, a client of the REST API.

Every module in `kvmmanager.cli.commands` is discovered: one exposing `app: typer.Typer`
and `NAME: str` becomes the sub-command group NAME; one exposing `register(root)` adds
its own top-level commands (serve, doctor...). Errors (KvmmError) end every command the
same way: one line `error: <message>` on stderr and the error's exit code.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from typing import Any

import click
import typer
from typer.core import TyperGroup

from kvmmanager.cli import commands
from kvmmanager.cli.output import CliState, print_error
from kvmmanager.core.errors import KvmmError


class KvmmGroup(TyperGroup):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KvmmError as e:
            print_error(e.message)
            raise typer.Exit(e.exit_code) from None


def command_modules() -> list[str]:
    return sorted(
        f"{commands.__name__}.{m.name}"
        for m in pkgutil.iter_modules(commands.__path__)
        if not m.name.startswith("_")
    )


def build_app() -> typer.Typer:
    root = typer.Typer(
        name="kvm-manager",
        cls=KvmmGroup,
        help="Manage virtual machines on KVM/libvirt hosts.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @root.callback()
    def _options(
        ctx: typer.Context,
        url: str | None = typer.Option(
            None, "--url", envvar="KVMM_URL", help="Server URL (default: from login/config)."
        ),
        json_output: bool = typer.Option(
            False, "--json", help="Print JSON instead of tables (for scripts)."
        ),
    ) -> None:
        ctx.obj = CliState(url=url, json=json_output)

    for name in command_modules():
        module = importlib.import_module(name)
        register = getattr(module, "register", None)
        sub = getattr(module, "app", None)
        if callable(register):
            register(root)
        if isinstance(sub, typer.Typer):
            group = getattr(module, "NAME", None)
            if not group:
                raise RuntimeError(f"{name} exposes `app` but no NAME")
            root.add_typer(sub, name=group)
    return root


app = build_app()


def main() -> None:
    # Keep rich from wrapping tables to 80 columns when piped.
    os.environ.setdefault("COLUMNS", os.environ.get("COLUMNS", "160"))
    sys.exit(app(standalone_mode=True) or 0)


if __name__ == "__main__":
    main()
