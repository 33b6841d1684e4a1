"""CLI command modules, discovered by `kvmmanager.cli.main`.

A module exposes either `app: typer.Typer` plus `NAME: str` (a sub-command group), or
`register(root_app)` to add top-level commands.
"""
