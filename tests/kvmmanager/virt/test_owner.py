"""Owner tags of transient helpers: only provably abandoned helpers count as abandoned."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace

import pytest

from kvmmanager.virt.owner import Owner, is_abandoned, process_start, this_process


@pytest.fixture
def live_process() -> Iterator[Owner]:
    """Another live process on this machine (another manager, as far as tags go)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        start = process_start(proc.pid)
        assert start is not None
        yield replace(this_process(), pid=proc.pid, start=start)
    finally:
        proc.kill()
        proc.wait(30)


@pytest.fixture
def dead_process() -> Owner:
    """A process of this machine that has exited (a manager killed with -9)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    start = process_start(proc.pid)
    assert start is not None
    proc.kill()
    proc.wait(30)
    return replace(this_process(), pid=proc.pid, start=start)


def test_tag_round_trip():
    me = this_process()
    assert Owner.parse(me.tag) == me
    assert Owner.parse("1a2b3c4d") is None
    assert Owner.parse("zz-00000000-1-2") is None


def test_own_helper_is_abandoned_only_when_no_longer_in_use():
    assert not is_abandoned(this_process(), in_use=True)
    assert is_abandoned(this_process(), in_use=False)


def test_a_live_managers_helper_is_never_abandoned(live_process):
    assert not is_abandoned(live_process, in_use=False)


def test_a_dead_managers_helper_is_abandoned(dead_process):
    assert is_abandoned(dead_process, in_use=False)


def test_a_reused_pid_does_not_keep_a_dead_managers_helper(live_process):
    # Same PID, another start time: the PID now belongs to a different process.
    assert is_abandoned(replace(live_process, start=live_process.start + 1), in_use=False)


def test_helpers_of_another_machine_or_boot_are_never_touched(dead_process):
    assert not is_abandoned(replace(dead_process, machine="00000000"), in_use=False)
    assert not is_abandoned(replace(dead_process, boot="00000000"), in_use=False)
