"""`kvm-manager batch ACTION ...`: one power action (or delete) on many VMs at once."""

from __future__ import annotations

import typer

from kvmmanager.cli.helpers import api_post
from kvmmanager.cli.output import emit, info, wants_json
from kvmmanager.core.errors import InvalidInput, NotFound

NAME = "batch"
app = typer.Typer(
    help="Run one action on many VMs (listed and/or by tag), with a result per VM.",
    no_args_is_help=True,
)

ACTIONS = (
    "start",
    "shutdown",
    "destroy",
    "reboot",
    "reset",
    "suspend",
    "resume",
    "snapshot",
    "delete",
)
COLUMNS = ["host", "vm", "ok", "state", "message"]
# Exit code when the batch ran but at least one VM failed (scripts can tell it apart).
PARTIAL_EXIT = 3


def _target(text: str, default_host: str) -> dict[str, str]:
    host, sep, vm = text.rpartition("/")
    if not sep:
        host, vm = default_host, text
    if not host or not vm:
        raise InvalidInput(f"{text!r} must be VM or HOST/VM", field="VMS")
    return {"host": host, "vm": vm}


def _command(action: str) -> None:
    def command(
        ctx: typer.Context,
        vms: list[str] = typer.Argument(None, help="VMs as NAME or HOST/NAME."),
        tag: str | None = typer.Option(None, "--tag", "-t", help="Also every VM with this tag."),
        host: str | None = typer.Option(
            None, "--host", "-H", help="Host of bare VM names (default local); limits --tag."
        ),
        mode: str = typer.Option("auto", "--mode", help="shutdown: acpi, agent or auto."),
        remove_volumes: bool = typer.Option(
            False, "--remove-volumes", help="delete: remove the disk volumes too."
        ),
        snapshot_name: str | None = typer.Option(
            None, "--snapshot-name", help="snapshot: its name (default: time-stamped)."
        ),
        concurrency: int = typer.Option(4, "--concurrency", "-c", help="VMs at a time (1-16)."),
    ) -> None:
        body = {
            "vms": [_target(v, host or "local") for v in vms or []],
            "tag": tag,
            "host": host if tag else None,
            "mode": mode,
            "remove_volumes": remove_volumes,
            "snapshot_name": snapshot_name,
            "concurrency": concurrency,
        }
        res = api_post(ctx, f"/api/batch/{action}", body)
        if res["total"] == 0:
            # Nothing ran: "0 of 0 succeeded" with exit 0 reads as success to a script
            # whose tag is misspelt or whose VMs are gone.
            where = f" on host {host!r}" if host else ""
            raise NotFound(f"--tag {tag!r} matched no VM{where}: nothing to {action}")
        emit(ctx, res if wants_json(ctx) else res["results"], COLUMNS)
        if not wants_json(ctx):
            info(
                f"{action}: {res['succeeded']} of {res['total']} succeeded, {res['failed']} failed"
            )
        if res["failed"]:
            raise typer.Exit(PARTIAL_EXIT)

    command.__doc__ = (
        f"{action.capitalize()} every VM named or tagged; one failure does not stop the "
        "others. Exits 3 when some VMs failed, 4 when --tag matched no VM (and no VM was "
        "named)."
    )
    app.command(action)(command)


for _action in ACTIONS:
    _command(_action)
