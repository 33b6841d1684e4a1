"""The waits between a host's connection attempts: exponential, capped and jittered.

A network blip or a restart of many daemons drops every connection of a manager at
once. Without jitter each host retried on the same schedule (at once, then 0.5 s, 1 s,
2 s ... after the drop), so 100 hosts opened 100 connections and resynced 100
inventories in the same instant, again and again while the daemons came back (issue 19).
Here each host draws its own waits: the first attempt after a loss comes anywhere
within the first step, and each later wait is half the step plus up to half of it at
random ("equal jitter": never shorter than half the step, so a host that keeps failing
still backs off).
"""

from __future__ import annotations

import random


class Backoff:
    """One host's waits. `first` is the first step (seconds), `cap` the longest step."""

    def __init__(self, first: float, cap: float, rng: random.Random | None = None) -> None:
        self.first = max(0.0, first)
        self.cap = max(self.first, cap)
        self._rng = rng or random.Random()  # noqa: S311 - spreading retries, not a secret
        self._step = self.first

    def reset(self) -> None:
        """Connected: the next failure starts from the first step again."""
        self._step = self.first

    def after_loss(self) -> float:
        """The wait before reopening a connection that worked and was lost."""
        self._step = self.first
        return self._rng.uniform(0.0, self.first)

    def after_failure(self) -> float:
        """The wait after a failed attempt; the step then doubles up to the cap."""
        step = self._step
        self._step = min(step * 2, self.cap)
        return step / 2 + self._rng.uniform(0.0, step / 2)
