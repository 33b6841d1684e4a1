"""Scenario 7: a hostile guest writes garbage and then a line that never ends to its
agent port. The manager stays responsive and the well-behaved VM's calls go on."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import pytest

from .conftest import Fleet, Lab
from .support.guests import Guest

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def hostile(lab: Lab, fleet: Fleet) -> Iterator[Guest]:
    g = lab.guest("hostile", "hostile", 12)
    g.create(lab.pool, lab.network)
    mark = g.start()
    # The port opens (libvirt says connected) as soon as the writer starts.
    lab.events.wait(
        lambda e: e.get("kind") == "domain.agent" and (e.get("data") or {}).get("name") == g.name,
        timeout=120,
        after=mark,
    )
    yield g
    g.remove()


def _ping_ms(lab: Lab, name: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        assert lab.api.ping(name)["pong"] is True
        out.append((time.perf_counter() - t) * 1000)
    return out


def test_manager_stays_responsive_and_other_vms_keep_working(
    lab: Lab, fleet: Fleet, hostile: Guest
) -> None:
    before = _ping_ms(lab, fleet.agent.name, 20)
    # Give the manager's client time to meet the garbage: wait until it has judged the
    # hostile agent (any status other than connected), then keep calling the good one.
    lab.events.wait(
        lambda e: (
            e.get("kind") == "domain.agent"
            and (e.get("data") or {}).get("name") == hostile.name
            and (e.get("data") or {}).get("status") in ("unresponsive", "connecting", "absent")
        ),
        timeout=120,
    )
    during = _ping_ms(lab, fleet.agent.name, 20)
    assert lab.api.vms()  # the API answers
    assert lab.api.vm(hostile.name)["agent_status"] != "connected"
    (lab.log_dir / "hostile.txt").write_text(
        f"good VM ping median before {statistics.median(before):.2f} ms, "
        f"during hostile {statistics.median(during):.2f} ms\n"
    )
    # A call to the hostile VM fails cleanly (never a 500, never a hang).
    from .support.api import ApiError

    with pytest.raises(ApiError) as err:
        lab.api.ping(hostile.name)
    assert err.value.status != 500
