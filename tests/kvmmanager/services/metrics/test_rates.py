"""Rates from getAllDomainStats records: deltas, restarts, counter resets, hot-plug."""

from __future__ import annotations

from typing import Any

import libvirt
import pytest

from kvmmanager.services.metrics.rates import (
    FIELDS,
    Counters,
    build_sample,
    memory,
    parse_counters,
    rates,
)

RUNNING = libvirt.VIR_DOMAIN_RUNNING


def record(
    cpu_ns: int = 0,
    disks: dict[str, tuple[int, int, int, int]] | None = None,
    nics: dict[str, tuple[int, int]] | None = None,
    state: int = RUNNING,
    **extra: Any,
) -> dict[str, Any]:
    """A qemu-shaped stats record (the keys virsh domstats shows)."""
    r: dict[str, Any] = {"state.state": state, "state.reason": 1, "cpu.time": cpu_ns, **extra}
    disks = disks or {}
    r["block.count"] = len(disks)
    for i, (name, (rb, wb, rr, wr)) in enumerate(disks.items()):
        r |= {
            f"block.{i}.name": name,
            f"block.{i}.rd.bytes": rb,
            f"block.{i}.wr.bytes": wb,
            f"block.{i}.rd.reqs": rr,
            f"block.{i}.wr.reqs": wr,
        }
    nics = nics or {}
    r["net.count"] = len(nics)
    for i, (name, (rx, tx)) in enumerate(nics.items()):
        r |= {f"net.{i}.name": name, f"net.{i}.rx.bytes": rx, f"net.{i}.tx.bytes": tx}
    return r


def as_dict(values: tuple[float | None, ...]) -> dict[str, float | None]:
    return dict(zip(FIELDS, values, strict=True))


def test_rates_from_two_collections() -> None:
    a = parse_counters(
        record(10**9, {"vda": (1000, 2000, 10, 20)}, {"vnet0": (500, 700)}), dom_id=3, t=100.0
    )
    b = parse_counters(
        record(2 * 10**9, {"vda": (5000, 2000, 30, 24)}, {"vnet0": (2500, 1700)}), 3, t=102.0
    )
    cpu, rd_b, wr_b, rd_r, wr_r, rx, tx = rates(a, b)
    assert cpu == pytest.approx(50.0)  # 1 s of CPU in 2 s
    assert (rd_b, wr_b, rd_r, wr_r) == pytest.approx((2000.0, 0.0, 10.0, 2.0))
    assert (rx, tx) == pytest.approx((1000.0, 500.0))


def test_two_busy_vcpus_read_200_percent() -> None:
    a = parse_counters(record(0), 1, t=0.0)
    b = parse_counters(record(4 * 10**9), 1, t=2.0)
    assert rates(a, b)[0] == pytest.approx(200.0)


def test_first_collection_and_restart_give_no_rate() -> None:
    cur = parse_counters(record(5 * 10**9, {"vda": (9, 9, 9, 9)}), 7, t=10.0)
    assert rates(None, cur) == (None,) * 7
    # Same counters lower than before but a new domain id: a restart, not negative load.
    before = parse_counters(record(50 * 10**9, {"vda": (99, 99, 99, 99)}), 6, t=8.0)
    assert rates(before, cur) == (None,) * 7


def test_counter_reset_without_restart_is_skipped_once() -> None:
    a = parse_counters(record(10 * 10**9, {"vda": (100, 100, 10, 10)}), 1, t=0.0)
    b = parse_counters(record(9 * 10**9, {"vda": (50, 200, 5, 20)}), 1, t=1.0)
    cpu, rd_b, wr_b, rd_r, wr_r, *_ = rates(a, b)
    assert cpu is None
    # The disk whose counters went down is left out, never a negative rate.
    assert (rd_b, wr_b, rd_r, wr_r) == (0.0, 0.0, 0.0, 0.0)
    c = parse_counters(record(10 * 10**9, {"vda": (150, 300, 6, 21)}), 1, t=2.0)
    assert rates(b, c)[:3] == pytest.approx((100.0, 100.0, 100.0))


def test_hotplugged_disk_is_no_burst() -> None:
    a = parse_counters(record(0, {"vda": (0, 0, 0, 0)}), 1, t=0.0)
    b = parse_counters(record(0, {"vda": (10, 0, 1, 0), "vdb": (10**12, 0, 10**6, 0)}), 1, t=1.0)
    assert rates(a, b)[1] == pytest.approx(10.0)


def test_backing_chain_entries_do_not_double_count() -> None:
    r = record(0, {"vda": (10, 20, 1, 2)})
    r |= {"block.count": 2, "block.1.name": "vda", "block.1.rd.bytes": 10**9}
    c = parse_counters(r, 1, t=0.0)
    assert c.block == {"vda": (10, 20, 1, 2)}


def test_memory_prefers_the_guest_figure() -> None:
    assert memory({"balloon.available": 1000, "balloon.unused": 400, "balloon.rss": 9}) == (
        600 * 1024,
        "guest",
    )
    assert memory({"balloon.rss": 2048}) == (2048 * 1024, "rss")
    assert memory({}) == (None, "")


def test_inactive_domain_has_no_values_and_no_baseline() -> None:
    shutoff = record(state=libvirt.VIR_DOMAIN_SHUTOFF)
    sample, counters = build_sample("u", "vm", shutoff, -1, 1.0, None)
    assert sample.state == "shutoff" and counters is None
    assert sample.values == (None,) * len(FIELDS)


def test_build_sample_totals_and_rates() -> None:
    prev = Counters(t=0.0, dom_id=2, cpu_ns=0, block={"vda": (0, 0, 0, 0)}, net={})
    r = record(
        3 * 10**9, {"vda": (4096, 8192, 2, 4)}, {"vnet1": (100, 300)}, **{"balloon.rss": 1024}
    )
    sample, cur = build_sample("u1", "web", r, 2, 2.0, prev)
    assert cur is not None and cur.cpu_ns == 3 * 10**9
    v = as_dict(sample.values)
    assert v["cpu_pct"] == pytest.approx(150.0)
    assert v["disk_wr_bps"] == pytest.approx(4096.0)
    assert v["mem_bytes"] == 1024 * 1024 and sample.mem_source == "rss"
    assert v["net_rx_bps"] == 0.0  # vnet1 is new this time: no rate yet
    assert sample.cpu_seconds == pytest.approx(3.0)
    assert (sample.disk_rd_bytes, sample.net_tx_bytes) == (4096, 300)
    assert sample.as_dict()["totals"]["disk_wr_reqs"] == 4


def test_many_devices_are_all_counted() -> None:
    # More devices than the precomputed record keys cover at first (they grow on demand).
    disks = {f"vd{chr(97 + i)}": (i, 2 * i, 3 * i, 4 * i) for i in range(20)}
    nics = {f"vnet{i}": (i, 10 * i) for i in range(12)}
    c = parse_counters(record(disks=disks, nics=nics), 1, 0.0)
    assert c.block == disks and c.net == nics
    doubled = {n: tuple(2 * x for x in v) for n, v in disks.items()}
    later = parse_counters(record(disks=doubled, nics=nics), 1, 2.0)
    _cpu, rd_b, wr_b, rd_r, wr_r, rx, tx = rates(c, later)
    assert (rd_b, wr_b, rd_r, wr_r) == (95.0, 190.0, 285.0, 380.0)  # sum(i) = 190, / 2 s
    assert (rx, tx) == (0.0, 0.0)
