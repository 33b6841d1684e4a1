"""The agent's log: `logging`'s line format without importing `logging`.

`logging` (with the traceback, string and weakref modules it pulls in) costs ~1 MB of
resident memory in an idle agent, a tenth of its budget, to write a few lines. The
agent process calls configure() at start and then writes each record itself, in the
format it always had: `2026-01-02 03:04:05,678 WARNING message`. Until configure() is
called (the host imports the agent's config and protocol modules as a library) records
go to `logging.getLogger("kvmmanager_agent")`, like any library's.
"""

from __future__ import annotations

import sys
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Optional, Tuple

LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}
_NAMES = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}


class Log:
    def __init__(self) -> None:
        self.level = 20
        self.stream: Optional[IO[str]] = None
        self.configured = False
        self.lock = threading.Lock()

    def configure(self, level: str, log_file: str = "") -> None:
        """Write records at `level` and above to `log_file`, or stderr when empty.

        An unknown level means info (as before). The file opens in append mode now, so
        a path that cannot be written is an error at start, not at the first record.
        """
        self.level = LEVELS.get(level.lower(), 20)
        self.stream = open(log_file, "a", encoding="utf-8") if log_file else None  # noqa: SIM115
        self.configured = True

    def _emit(self, level: int, msg: str, args: Tuple[Any, ...], exc: bool = False) -> None:
        if not self.configured:
            import logging

            logging.getLogger("kvmmanager_agent").log(level, msg, *args, exc_info=exc)
            return
        if level < self.level:
            return
        try:
            text = msg % args if args else msg
        except (TypeError, ValueError):
            text = "%s %r" % (msg, args)
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        line = "%s,%03d %s %s\n" % (stamp, int(now * 1000) % 1000, _NAMES[level], text)
        if exc:
            import traceback  # only when something failed

            line += traceback.format_exc()
        stream = self.stream or sys.stderr
        with self.lock:
            try:
                stream.write(line)
                stream.flush()
            except (OSError, ValueError):
                pass  # a full disk or a closed stderr must not take the agent down

    def debug(self, msg: str, *args: Any) -> None:
        self._emit(10, msg, args)

    def info(self, msg: str, *args: Any) -> None:
        self._emit(20, msg, args)

    def warning(self, msg: str, *args: Any) -> None:
        self._emit(30, msg, args)

    def error(self, msg: str, *args: Any) -> None:
        self._emit(40, msg, args)

    def exception(self, msg: str, *args: Any) -> None:
        """An error with the traceback of the exception being handled."""
        self._emit(40, msg, args, exc=True)


log = Log()
