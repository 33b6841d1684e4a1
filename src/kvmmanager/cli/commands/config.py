"""`kvm-manager config show`: the effective configuration, secrets redacted."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import typer
from sqlalchemy.engine import make_url

from kvmmanager.cli.output import print_json, wants_json
from kvmmanager.core.config import default_config_file, get_settings
from kvmmanager.services.users.audit import REDACTED, is_secret_key

NAME = "config"
app = typer.Typer(help="Show the configuration.", no_args_is_help=True)


def redacted_settings() -> dict[str, Any]:
    data = get_settings().model_dump(mode="json")

    def scrub(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: (REDACTED if is_secret_key(k) and v else scrub(v)) for k, v in obj.items()}
        return obj

    data = scrub(data)
    if data["database"]["url"]:
        # A database URL can carry a password: hide it, keep the rest readable.
        data["database"]["url"] = make_url(data["database"]["url"]).render_as_string(
            hide_password=True
        )
    return data


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(str(v))


def to_toml(data: Mapping[str, Any]) -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    for section, values in data.items():
        if isinstance(values, Mapping):
            lines += ["", f"[{section}]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


@app.command("show")
def show(
    ctx: typer.Context,
    json_flag: bool = typer.Option(False, "--json", help="JSON instead of TOML."),
) -> None:
    """Print the effective configuration (file + KVMM_* environment + defaults)."""
    data = redacted_settings()
    if wants_json(ctx, json_flag):
        print_json(data)
        return
    typer.echo(f"# config file: {default_config_file()}")
    typer.echo(to_toml(data), nl=False)
