"""Method handlers, one module per group; HANDLERS maps every protocol method to its function."""

from __future__ import annotations

from typing import Any, Callable, Dict

from . import (
    clock,
    exec,
    files,
    freeze,
    metrics,
    network,
    power,
    processes,
    services,
    sshkeys,
    system,
    transfer,
    users,
)

HANDLERS: Dict[str, Callable[..., Any]] = {}
for _mod in (
    system, network, exec, files, transfer, power, freeze, services, users, clock, sshkeys,
    metrics, processes,
):  # fmt: skip
    HANDLERS.update(_mod.HANDLERS)
