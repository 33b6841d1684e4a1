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

from kvmmanager import __version__
from kvmmanager.cli import commands
from kvmmanager.cli.examples import epilog
from kvmmanager.cli.flags import command_flags, in_cli_words
from kvmmanager.cli.output import CliState, print_error
from kvmmanager.core.errors import InvalidInput, KvmmError


def _set_json(ctx: typer.Context, _param: Any, value: bool) -> None:
    # Runs while the sub-command's arguments are parsed (given or not), after the root
    # callback made the CliState: `vm list --json` then means exactly `--json vm list`,
    # and the command's own flags are known when an API error has to be printed.
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    root.obj.flags = command_flags(ctx.command.params)
    if value:
        root.obj.json = True


def _json_option() -> Any:
    # Built through typer's own API (typer carries its own click): a throwaway command
    # declaring the option, whose parameter object is then shared by every leaf command.
    probe = typer.Typer()

    @probe.command()
    def _probe(
        json_output: bool = typer.Option(
            False,
            "--json",
            callback=_set_json,
            help="Print JSON instead of tables (for scripts); same as the global --json.",
        ),
    ) -> None:
        pass

    option = typer.main.get_command(probe).params[0]
    option.expose_value = False  # the commands read it through wants_json(ctx)
    return option


def _print_version(value: bool) -> None:
    # Eager: answered before any sub-command is needed, without a server or a login.
    if value:
        typer.echo(f"kvm-manager {__version__}")
        raise typer.Exit()


def add_json_options(group: TyperGroup) -> None:
    """Give every leaf command a `--json` of its own unless it declares one: the README and
    scripts write `kvm-manager vm list --json`, not only `kvm-manager --json vm list`."""
    for command in group.commands.values():
        if isinstance(command, TyperGroup):
            add_json_options(command)
        elif not any("--json" in getattr(p, "opts", ()) for p in command.params):
            command.params.append(_JSON_OPTION)


_JSON_OPTION = _json_option()


def add_examples(group: TyperGroup, path: tuple[str, ...] = ()) -> None:
    """Every leaf command's `--help` ends with its examples (cli/examples.py)."""
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup):
            add_examples(command, (*path, name))
        elif command.epilog is None:
            command.epilog = epilog(" ".join((*path, name)))


class KvmmGroup(TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        add_json_options(self)
        add_examples(self)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KvmmError as e:
            flags = ctx.obj.flags if isinstance(ctx.obj, CliState) else {}
            # Only a refused input names the flag it came from; other errors (a host that
            # does not answer, field "host") keep their own words.
            field = e.field if isinstance(e, InvalidInput) else None
            print_error(in_cli_words(e.message, flags, field))
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
        _version: bool = typer.Option(
            False,
            "--version",
            callback=_print_version,
            is_eager=True,
            expose_value=False,
            help="Print the version of kvm-manager and exit.",
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
