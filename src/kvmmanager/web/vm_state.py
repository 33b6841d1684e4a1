"""A VM's state in plain words for the web pages: libvirt's names ("shutoff",
"pmsuspended") and reasons ("unpaused", "destroyed") are the REST API's fields and stay
there; a person reads "off (forced off)". A reason is shown only where it tells something
(why a VM is paused or off), never the ordinary ones ("booted", "unpaused", "unknown")."""

from __future__ import annotations

from dataclasses import dataclass

LABELS = {
    "nostate": "no state",
    "running": "running",
    "blocked": "blocked",
    "paused": "paused",
    "shutdown": "shutting down",
    "shutoff": "off",
    "crashed": "crashed",
    "pmsuspended": "suspended",
}
# (state, reason) -> words; a reason not here (or "unknown-N") is not shown.
_REASONS = {
    "running": {
        "migrated": "migrated here",
        "restored": "restored",
        "from_snapshot": "from a snapshot",
        "crashed": "after a crash",
        "postcopy": "post-copy migration",
        "postcopy_failed": "post-copy migration failed",
    },
    "paused": {
        "migration": "migrating",
        "save": "saving",
        "dump": "dumping memory",
        "ioerror": "I/O error",
        "watchdog": "watchdog",
        "from_snapshot": "from a snapshot",
        "shutting_down": "shutting down",
        "snapshot": "taking a snapshot",
        "crashed": "crashed",
        "starting_up": "starting up",
        "postcopy": "post-copy migration",
        "postcopy_failed": "post-copy migration failed",
        "api_error": "API error",
    },
    "shutoff": {
        "destroyed": "forced off",
        "crashed": "crashed",
        "migrated": "migrated away",
        "saved": "saved",
        "failed": "failed to start",
        "from_snapshot": "from a snapshot",
        "daemon": "stopped by libvirt",
    },
    "crashed": {"panicked": "guest panic"},
    "pmsuspended": {"disk": "to disk"},
}


@dataclass(frozen=True, slots=True)
class StateWords:
    label: str  # "off"
    detail: str  # "forced off", or "" when the reason says nothing worth reading

    def __str__(self) -> str:
        return f"{self.label} ({self.detail})" if self.detail else self.label


def state_words(state: str, reason: str = "") -> StateWords:
    return StateWords(LABELS.get(state, state), _REASONS.get(state, {}).get(reason, ""))
