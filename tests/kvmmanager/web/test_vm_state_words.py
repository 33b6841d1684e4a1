"""The web pages' words for libvirt's VM states and reasons (web/vm_state.py); the REST
API keeps libvirt's names (test_vms_api.py reads "shutoff")."""

from __future__ import annotations

import pytest

from kvmmanager.virt.readers import _STATE_REASONS, DOMAIN_STATES, reason_name
from kvmmanager.web.vm_state import state_words


@pytest.mark.parametrize(
    ("state", "reason", "words"),
    [
        ("running", "unpaused", "running"),
        ("running", "booted", "running"),
        ("shutoff", "destroyed", "off (forced off)"),
        ("shutoff", "unknown", "off"),
        ("shutoff", "shutdown", "off"),
        ("paused", "ioerror", "paused (I/O error)"),
        ("paused", "user", "paused"),
        ("pmsuspended", "memory", "suspended"),
        ("crashed", "panicked", "crashed (guest panic)"),
        ("running", "unknown-42", "running"),
    ],
)
def test_states_read_as_plain_words(state: str, reason: str, words: str) -> None:
    assert str(state_words(state, reason)) == words


def test_no_libvirt_state_or_reason_shows_through_as_a_raw_name() -> None:
    for code, state in DOMAIN_STATES.items():
        for i in range(len(_STATE_REASONS.get(code, ("unknown",)))):
            shown = str(state_words(state, reason_name(code, i)))
            assert "_" not in shown, shown
            assert not shown.startswith(("shutoff", "pmsuspended", "nostate")), shown
