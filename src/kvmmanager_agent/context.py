"""Per-agent state the method handlers share (config, freezer, open handles, ...)."""

from __future__ import annotations

import time
from typing import Any, Callable, List, Optional

from .config import Config
from .methods.exec import ExecTable
from .methods.freeze import Freezer
from .methods.power import run_later
from .methods.transfer import TransferTable


class Context:
    def __init__(
        self,
        config: Config,
        freeze_backend: Any = None,
        power: Optional[Callable[[List[str], float], None]] = None,
    ) -> None:
        self.config = config
        self.freezer = Freezer(config.freeze_timeout_seconds, freeze_backend)
        # Injectable so tests can check what would run without powering anything off.
        self.power = power or run_later
        self.transfers = TransferTable()
        self.execs = ExecTable()
        self.cpu_sample = None  # type: Any
        self.started = time.time()

    def close(self) -> None:
        # Never exit leaving the guest frozen.
        if self.freezer.is_frozen():
            self.freezer.thaw()
        self.transfers.close_all()
