"""A qemu-guest-agent that fails its shutdown (issue 17, item 2).

The e2e guest's busybox has no /sbin/shutdown, which qemu-ga's guest-shutdown runs: the
agent answers with an error. That was an HTTP 500 `internal_error`, and mode=auto did not
fall back to the power button. Now mode=agent is a guest error naming the agent, and
mode=auto presses the ACPI power button, says why, and the VM ends.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from .conftest import Lab
from .support.api import ApiError
from .support.events import lifecycle_event

pytestmark = pytest.mark.vm


def test_failed_qga_shutdown_is_a_guest_error_and_auto_falls_back_to_acpi(lab: Lab) -> None:
    g = lab.guest("qgaoff", "qga", 48)
    g.create(lab.pool, lab.network)
    try:
        _refused_then_acpi(lab, g)
    finally:
        # The lab's pool must end with only the agent ISO in it (test_90_cleanup).
        with contextlib.suppress(ApiError):
            lab.api.action(g.name, "destroy")
        lab.api.delete_vm(g.name)


def _refused_then_acpi(lab: Lab, g: Any) -> None:
    mark = g.start()
    g.wait_agent(mark, channel="qga")

    with pytest.raises(ApiError) as refused:
        lab.api.action(g.name, "shutdown", mode="agent")
    assert (refused.value.status, refused.value.code) == (502, "guest_error")
    assert "qemu-guest-agent" in refused.value.body["error"]["message"]
    assert lab.api.vm(g.name)["state"] == "running"

    mark = lab.events.mark()
    res = lab.api.action(g.name, "shutdown", mode="auto")
    assert res["details"]["mode"] == "acpi"
    assert "qemu-guest-agent failed" in res["details"]["qga_failure"]
    assert "ACPI power button" in res["message"]
    lab.events.wait(lifecycle_event(g.name, "shutoff"), timeout=120, after=mark)
    assert lab.api.vm(g.name)["state"] == "shutoff"
