"""Scenario 8: the agent's reboot brings the agent back; its shutdown ends the domain."""

from __future__ import annotations

import pytest

from .conftest import Fleet, Lab
from .support.events import agent_event, lifecycle_event

pytestmark = pytest.mark.vm


def test_agent_reboot_brings_the_agent_back(lab: Lab, fleet: Fleet) -> None:
    g = fleet.agent
    mark = lab.events.mark()
    r = lab.api.agent(g.name, "reboot", "POST", json={"timeout_seconds": 0})
    assert r["initiated"] is True
    lab.events.wait(
        lambda e: e.get("kind") == "domain.reboot" and (e.get("data") or {}).get("name") == g.name,
        timeout=120,
        after=mark,
    )
    lab.events.wait(agent_event(g.name, "connected"), timeout=180, after=mark)
    g.wait_agent(mark)
    assert lab.api.agent(g.name, "system")["uptime_seconds"] < 120


def test_agent_shutdown_ends_the_domain(lab: Lab, fleet: Fleet) -> None:
    g = fleet.agent
    mark = lab.events.mark()
    r = lab.api.agent(g.name, "shutdown", "POST", json={"timeout_seconds": 0})
    assert r["initiated"] is True
    lab.events.wait(lifecycle_event(g.name, "shutoff"), timeout=120, after=mark)
    assert lab.api.vm(g.name)["state"] == "shutoff"
