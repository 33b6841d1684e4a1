"""How many failed requests of clients that are not logged in the audit log takes per minute.

Every write request is audited, refused ones too, so without a bound one anonymous client
could grow the database as fast as it can send (10 MB in 4 s was measured). Entries of
authenticated users are always written (they are accountable); a failed request without a
user takes one unit of its address's budget and of the whole server's, per clock minute
(`audit.anonymous_failures_per_minute_per_address`, `audit.anonymous_failures_per_minute`).
What is over budget is counted instead, and when the minute is over one `audit.suppressed`
entry per address (at most `MAX_SUMMARIES`, the rest together in one more) says how many
were left out. So the log grows by at most (total budget + MAX_SUMMARIES + 1) anonymous
entries a minute, each of bounded size (api/auditing.py truncates their parameters).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_SECONDS = 60
MAX_SUMMARIES = 100
OTHERS = "(other addresses)"


@dataclass(frozen=True, slots=True)
class Suppressed:
    """Failed anonymous requests from `address` left out of the log in one minute."""

    address: str
    count: int
    window_start: float


class AnonymousFailureBudget:
    def __init__(
        self, per_address: int, total: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.per_address = per_address
        self.total = total
        self.clock = clock
        self._window = self._current()
        self._recorded: Counter[str] = Counter()
        self._recorded_total = 0
        self._suppressed: Counter[str] = Counter()
        self._closed: list[Suppressed] = []
        self._lock = threading.Lock()

    def _current(self) -> int:
        return int(self.clock() // WINDOW_SECONDS)

    def _roll(self) -> None:
        window = self._current()
        if window == self._window:
            return
        start = float(self._window * WINDOW_SECONDS)
        top = self._suppressed.most_common(MAX_SUMMARIES)
        self._closed.extend(Suppressed(a, n, start) for a, n in top)
        rest = sum(self._suppressed.values()) - sum(n for _, n in top)
        if rest:
            self._closed.append(Suppressed(OTHERS, rest, start))
        self._window = window
        self._recorded.clear()
        self._recorded_total = 0
        self._suppressed.clear()

    def admit(self, address: str) -> bool:
        """True: write this failed anonymous request's entry; False: it was counted."""
        with self._lock:
            self._roll()
            if self._recorded[address] < self.per_address and self._recorded_total < self.total:
                self._recorded[address] += 1
                self._recorded_total += 1
                return True
            if address in self._suppressed or len(self._suppressed) < 10 * MAX_SUMMARIES:
                self._suppressed[address] += 1
            else:
                # A spray of addresses: count it under one key so memory stays bounded.
                self._suppressed[OTHERS] += 1
            return False

    def take_closed(self) -> list[Suppressed]:
        """The counts of minutes that are over, once each (for their summary entries)."""
        with self._lock:
            self._roll()
            closed, self._closed = self._closed, []
            return closed
