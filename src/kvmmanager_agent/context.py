"""Per-agent state the method handlers share (config, freezer, open handles, ...)."""

from __future__ import annotations

import time

from .config import Config

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional

    from .methods.freeze import Freezer


class Context:
    def __init__(
        self,
        config: Config,
        freeze_backend: Any = None,
        power: Optional[Callable[[List[str], float], None]] = None,
    ) -> None:
        self.config = config
        self._freeze_backend = freeze_backend
        self._freezer: Optional[Freezer] = None
        # Injectable so tests can check what would run without powering anything off.
        self.power = power or _run_later
        self._transfers: Any = None
        self._execs: Any = None
        self.cpu_sample: Any = None
        self.started = time.time()

    # Built on first use: the freezer's module reads mounts, the others pull in
    # subprocess and hashlib; an idle agent carries none of them.
    @property
    def freezer(self) -> Freezer:
        if self._freezer is None:
            from .methods.freeze import Freezer

            self._freezer = Freezer(self.config.freeze_timeout_seconds, self._freeze_backend)
        return self._freezer

    def is_frozen(self) -> bool:
        return self._freezer is not None and self._freezer.is_frozen()

    @property
    def transfers(self) -> Any:
        if self._transfers is None:
            from .methods.transfer import TransferTable

            self._transfers = TransferTable()
        return self._transfers

    @property
    def execs(self) -> Any:
        if self._execs is None:
            from .methods.exec import ExecTable

            self._execs = ExecTable()
        return self._execs

    def close(self) -> None:
        # Never exit leaving the guest frozen.
        if self._freezer is not None and self._freezer.is_frozen():
            self._freezer.thaw()
        if self._transfers is not None:
            self._transfers.close_all()


def _run_later(argv: List[str], delay: float) -> None:
    from .methods.power import run_later

    run_later(argv, delay)
