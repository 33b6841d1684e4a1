"""`kvm-manager snapshot ...`: VM snapshots (list as a tree, create, revert, delete)."""

from __future__ import annotations

from typing import Any

import typer

from kvmmanager.cli.api_client import client
from kvmmanager.cli.helpers import HOST_OPTION, api_get
from kvmmanager.cli.output import console, emit, info, wants_json
from kvmmanager.cli.urls import q
from kvmmanager.core.sanitize import inert

NAME = "snapshot"
app = typer.Typer(
    help="VM snapshots: list (tree), create, revert, delete, quiesce policy.",
    no_args_is_help=True,
)
COLUMNS = ["name", "parent", "kind", "memory", "state", "current", "description"]


def _base(host: str, vm: str) -> str:
    return f"/api/hosts/{q(host)}/vms/{q(vm)}/snapshots"


def _print_tree(nodes: list[dict[str, Any]], current: str | None, depth: int = 0) -> None:
    for node in nodes:
        mark = "  <- current" if node["name"] == current else ""
        line = f"{'  ' * depth}{'└─ ' if depth else ''}{inert(node['name'])}{mark}"
        console().print(line, markup=False, highlight=False)
        _print_tree(node["children"], current, depth + 1)


@app.command("list")
def list_snapshots(
    ctx: typer.Context,
    vm: str,
    tree: bool = typer.Option(False, "--tree", help="Show the parent/child tree."),
    host: str = HOST_OPTION,
) -> None:
    """List a VM's snapshots (a table, or the tree with --tree)."""
    data = api_get(ctx, _base(host, vm))
    if wants_json(ctx):
        emit(ctx, data)
    elif tree and not data["tree"]:
        info(f"vm {vm} has no snapshots")  # an empty tree printed nothing at all
    elif tree:
        _print_tree(data["tree"], data["current"])
    else:
        emit(ctx, data["snapshots"], COLUMNS)


@app.command("create")
def create(
    ctx: typer.Context,
    vm: str,
    name: str | None = typer.Argument(None, help="Default: snap-YYYYMMDD-HHMMSS."),
    description: str | None = typer.Option(None, "--description", "-d"),
    kind: str | None = typer.Option(None, "--kind", help="internal or external (default: auto)."),
    memory: bool | None = typer.Option(None, "--memory/--no-memory", help="Include memory state."),
    quiesce: str = typer.Option("auto", "--quiesce", help="auto, never or require."),
    host: str = HOST_OPTION,
) -> None:
    """Take a snapshot; says how consistent it is (quiesced, memory, crash-consistent)."""
    body = {
        "name": name,
        "description": description,
        "kind": kind,
        "memory": memory,
        "quiesce": quiesce,
    }
    with client(ctx) as api:
        result = api.post(_base(host, vm), json=body)
    if not wants_json(ctx):
        c = result["consistency"]
        info(f"snapshot {result['name']}: {result['kind']}, {c['level']} ({c['message']})")
    emit(ctx, result)


@app.command("revert")
def revert(
    ctx: typer.Context,
    vm: str,
    name: str,
    start: bool | None = typer.Option(None, "--start/--no-start", help="State afterwards."),
    force: bool = typer.Option(False, "--force", help="Revert even when libvirt calls it risky."),
    host: str = HOST_OPTION,
) -> None:
    """Go back to a snapshot."""
    with client(ctx) as api:
        emit(
            ctx,
            api.post(f"{_base(host, vm)}/{q(name)}/revert", json={"start": start, "force": force}),
        )


@app.command("delete")
def delete(
    ctx: typer.Context,
    vm: str,
    name: str,
    children: bool = typer.Option(False, "--children", help="Also delete every descendant."),
    host: str = HOST_OPTION,
) -> None:
    """Delete a snapshot (external ones are merged first: the VM's data never changes)."""
    with client(ctx) as api:
        emit(ctx, api.delete(f"{_base(host, vm)}/{q(name)}", params={"children": children}))


@app.command("quiesce-policy")
def quiesce_policy(
    ctx: typer.Context,
    vm: str,
    policy: str = typer.Argument(..., help="auto or never."),
    host: str = HOST_OPTION,
) -> None:
    """Whether snapshots of this VM may freeze its filesystems (kept in its metadata)."""
    with client(ctx) as api:
        emit(
            ctx,
            api.put(f"/api/hosts/{q(host)}/vms/{q(vm)}/quiesce-policy", json={"policy": policy}),
        )
