"""Login throttling that slows a guesser down without locking the real user out.

Two bounds, both in memory (a restart forgets them; argon2 keeps each guess costly):

- per client address, all user names together: `auth.login_attempts_per_minute` attempts
  in any 60 s window;
- per (user name, client address): after `auth.login_free_failures` consecutive failures,
  each further attempt from that address waits 1 s, then 2, 4, ... up to
  `auth.login_backoff_max_seconds`. A success clears it.

Nothing is counted per user name alone, so failing logins for `admin` from one address
never stops admin from logging in from another. Behind a reverse proxy the address is the
forwarded client's, once the proxy is listed in `server.trusted_proxies`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from kvmmanager.core.errors import RateLimited

WINDOW_SECONDS = 60.0
# Bound on remembered addresses and (user, address) pairs against sprays.
MAX_KEYS = 20_000


@dataclass(slots=True)
class _Failures:
    count: int = 0
    last: float = 0.0
    wait_until: float = 0.0


class LoginThrottle:
    def __init__(
        self,
        per_minute: int,
        free_failures: int,
        backoff_max_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self.free_failures = free_failures
        self.backoff_max = backoff_max_seconds
        self.clock = clock
        self._by_address: dict[str, deque[float]] = {}
        self._failures: dict[tuple[str, str], _Failures] = {}
        self._lock = threading.Lock()

    def check(self, username: str, address: str) -> None:
        """Count one attempt; raise RateLimited (with `retry_after`) when it must wait."""
        now = self.clock()
        with self._lock:
            f = self._failures.get((username, address))
            if f is not None and f.wait_until > now:
                self._refuse(f.wait_until - now)
            q = self._by_address.setdefault(address, deque())
            while q and now - q[0] >= WINDOW_SECONDS:
                q.popleft()
            if len(q) >= self.per_minute:
                self._refuse(WINDOW_SECONDS - (now - q[0]))
            q.append(now)
            if len(self._by_address) + len(self._failures) > MAX_KEYS:
                self._forget_idle(now)

    def failed(self, username: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            f = self._failures.setdefault((username, address), _Failures())
            f.count += 1
            f.last = now
            over = f.count - self.free_failures
            if over >= 0:
                f.wait_until = now + min(self.backoff_max, 2.0**over)

    def succeeded(self, username: str, address: str) -> None:
        with self._lock:
            self._failures.pop((username, address), None)

    @staticmethod
    def _refuse(seconds: float) -> None:
        retry = max(1, int(seconds + 0.999))
        raise RateLimited(
            f"too many login attempts; retry in {retry} s", details={"retry_after": retry}
        )

    def _forget_idle(self, now: float) -> None:
        for addr in [a for a, q in self._by_address.items() if not q or now - q[-1] > 60]:
            del self._by_address[addr]
        # A failure streak is kept while it can still delay (and as long again), so that
        # waiting it out does not reset the doubling.
        keep = 2 * self.backoff_max
        for key in [k for k, f in self._failures.items() if now - f.last > keep]:
            del self._failures[key]
        if len(self._failures) > MAX_KEYS // 2:
            # Still too many (a spray of names): drop the oldest streaks first.
            oldest = sorted(self._failures, key=lambda k: self._failures[k].last)
            for key in oldest[: len(oldest) - MAX_KEYS // 2]:
                del self._failures[key]
