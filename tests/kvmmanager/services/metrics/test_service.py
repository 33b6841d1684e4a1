"""The metrics service on libvirt's test driver: collection, overruns, host isolation,
persistence across a restart, guest metrics, and the bulk call's parsing."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import libvirt
import pytest

from kvmmanager.core.config import Settings
from kvmmanager.core.errors import InvalidInput, NotFound
from kvmmanager.services.metrics import service as metrics_mod
from kvmmanager.services.metrics import store as metrics_store
from kvmmanager.services.metrics.history import DownsampledRing
from kvmmanager.services.metrics.rates import FIELDS

DEADLINE = 60.0
SECOND_HOST = "kvmm-t-met-b"


@pytest.fixture
def settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings.metrics.interval_seconds = 0.1
    monkeypatch.setattr(metrics_mod, "MIN_GUEST_INTERVAL", 0.1)
    monkeypatch.setattr(metrics_mod, "GUEST_INTERVAL_FACTOR", 1)
    return settings


async def until(cond: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while not (value := cond()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return value


def cycles(m: Any, host: str = "local") -> int:
    return m.metrics.host(host).cycles if host in m.metrics.hosts() else 0


async def test_collects_every_vm_of_the_host(manager: Any) -> None:
    await until(lambda: cycles(manager) >= 3, "three collections")
    cur = manager.metrics.current("local")
    assert [v["name"] for v in cur["vms"]] == ["test"]
    assert cur["collector"]["errors"] == 0 and cur["collector"]["vms"] == 1
    vm = manager.metrics.vm_current("local", "test")
    assert vm["state"] == "running" and vm["guest"] is None
    # The test driver reports no disks: zero traffic once there is a baseline.
    assert vm["disk_rd_bps"] == 0.0
    hist = manager.metrics.history("local", "test")
    assert hist["fields"] == list(FIELDS) and hist["step"] == pytest.approx(0.1)
    assert len(hist["series"]["ts"]) >= 3
    assert hist["series"]["ts"] == sorted(hist["series"]["ts"])


async def test_bad_queries_name_the_field(manager: Any) -> None:
    await until(lambda: cycles(manager) >= 1, "a collection")
    with pytest.raises(NotFound) as e:
        manager.metrics.vm_current("local", "kvmm-t-met-nope")
    assert e.value.field == "vm"
    with pytest.raises(NotFound) as e:
        manager.metrics.current("kvmm-t-met-nohost")
    assert e.value.field == "host"
    with pytest.raises(InvalidInput) as e:
        manager.metrics.history("local", "test", since=10.0, until=5.0)
    assert e.value.field == "since"
    with pytest.raises(InvalidInput) as e:
        manager.metrics.history("local", "test", since=0.0, until=31 * 86400.0)
    assert e.value.field == "since" and "metrics.retention_days" in e.value.message
    for kwargs in ({"window": "2w"}, {"window": "1h", "since": 1.0}):
        with pytest.raises(InvalidInput) as e:
            manager.metrics.history("local", "test", **kwargs)
        assert e.value.field == "range"


async def test_overrun_is_skipped_and_counted(
    manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await until(lambda: cycles(manager) >= 1, "a collection")
    release = threading.Event()
    calls = 0
    real = metrics_mod.collect_blocking

    def slow(hc: Any, prev: Any) -> Any:
        nonlocal calls
        calls += 1
        release.wait(DEADLINE)
        return real(hc, prev)

    monkeypatch.setattr(metrics_mod, "collect_blocking", slow)
    hm = manager.metrics.host("local")
    base = hm.overruns
    await until(lambda: hm.overruns >= base + 3, "overruns while a collection hangs")
    # Skipped, not queued: only the one hung call was ever started.
    assert calls == 1
    release.set()
    done = hm.cycles
    await until(lambda: hm.cycles > done, "collections after the hang ended")


async def test_slow_host_never_delays_another(
    manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real = metrics_mod.collect_blocking

    def maybe_hang(hc: Any, prev: Any) -> Any:
        if hc.name == "local":
            release.wait(DEADLINE)
        return real(hc, prev)

    monkeypatch.setattr(metrics_mod, "collect_blocking", maybe_hang)
    hc = await manager.registry.add(SECOND_HOST, "test:///default")
    try:
        await hc.wait_connected()
        start_local = cycles(manager)
        await until(lambda: cycles(manager, SECOND_HOST) >= 5, "the other host's collections")
        assert cycles(manager) <= start_local + 1
        assert manager.metrics.host("local").overruns >= 1
    finally:
        release.set()
        await manager.registry.remove(SECOND_HOST)
    await until(lambda: SECOND_HOST not in manager.metrics.hosts(), "removed host dropped")


async def test_closed_buckets_are_persisted_and_restored(manager: Any, settings: Settings) -> None:
    from kvmmanager.services.manager import Manager

    await until(lambda: cycles(manager) >= 1, "a collection")
    hm = manager.metrics.host("local")
    hm.down = DownsampledRing(span=3600, step=0.2)
    uuid = manager.inventory.domain("local", "test").uuid
    rows = await until(
        lambda: metrics_store.load(manager.db, "local", 0, 0).items(), "a persisted bucket"
    )
    _start, by_vm = next(iter(rows))
    assert uuid in by_vm and len(by_vm[uuid]) == len(FIELDS)
    # A bucket an hour old, as a previous run would have left it: a new manager shows it.
    old = (time.time() // 300) * 300 - 3600
    metrics_store.save_bucket(manager.db, "local", old, 300, {uuid: [42.0] * len(FIELDS)})
    again = Manager(settings)
    await again.start()
    try:
        await until(lambda: "local" in again.metrics.hosts(), "the new manager's collector")
        # The VM is looked up in the new manager's inventory: filled once it has connected.
        await again.registry.get("local").wait_connected(30)
        hist = again.metrics.history("local", "test", since=old - 1, until=time.time())
        assert hist["step"] == 300
        i = hist["series"]["ts"].index(old)
        assert hist["series"]["cpu_pct"][i] == pytest.approx(42.0, rel=1e-3)
    finally:
        await again.stop()
    # Saving the same bucket again replaces it (a restart within one bucket).
    metrics_store.save_bucket(manager.db, "local", old, 300, {uuid: [1.0] * len(FIELDS)})
    assert metrics_store.load(manager.db, "local", 300, old)[old][uuid][0] == 1.0
    assert metrics_store.prune(manager.db, 300, old + 1) >= 1


async def test_guest_metrics_merged_when_agent_connected(
    manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await until(lambda: cycles(manager) >= 1, "a collection")
    info = manager.inventory.domain("local", "test")
    calls: list[tuple[str, str, str]] = []

    async def fake_call(host: str, vm: str, method: str, params: Any = None) -> Any:
        calls.append((host, vm, method))
        return {
            "cpu_percent": 12.5,
            "memory": {"total_kb": 1000, "used_kb": 400, "evil": "x" * 10_000},
            "load_average": [0.1, 0.2, float("nan")],
            "filesystems": [{"mount_point": "/\x1b[31m", "used_percent": 50.0}] * 100,
            "unknown": {"nested": True},
        }

    monkeypatch.setattr(manager.agents, "call", fake_call)
    # As if the guest's agent had answered (the test driver has no channels to probe).
    real_domains = manager.inventory.domains
    monkeypatch.setattr(
        manager.inventory,
        "domains",
        lambda host=None: [
            dataclasses.replace(d, agent_status="connected") for d in real_domains(host)
        ],
    )
    await until(lambda: manager.metrics.host("local").guest.get(info.uuid), "guest metrics")
    vm = manager.metrics.vm_current("local", "test")
    guest = vm["guest"]
    assert calls[0] == ("local", info.uuid, "get_metrics")
    assert guest["cpu_percent"] == 12.5
    assert guest["memory"] == {"total_kb": 1000, "used_kb": 400}
    assert "load_average" not in guest and "unknown" not in guest
    assert len(guest["filesystems"]) == 32
    assert guest["filesystems"][0]["mount_point"] == "/[31m"


class FakeDomain:
    def __init__(self, uuid: str, name: str, dom_id: int) -> None:
        self._uuid, self._name, self._id = uuid, name, dom_id

    def UUIDString(self) -> str:
        return self._uuid

    def name(self) -> str:
        return self._name

    def ID(self) -> int:
        return self._id


class FakeConn:
    def __init__(self) -> None:
        self.records: list[tuple[FakeDomain, dict[str, Any]]] = []
        self.calls = 0

    def getAllDomainStats(self, stats: int, flags: int) -> Any:
        self.calls += 1
        assert flags & libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
        assert stats & libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
        return self.records


class FakeHost:
    def __init__(self) -> None:
        self.conn = FakeConn()


def test_collect_blocking_makes_one_call_for_all_domains() -> None:
    hc = FakeHost()
    doms = [FakeDomain(f"u{i}", f"vm{i}", i + 1) for i in range(50)]

    def stats(cpu_s: int, rss: int) -> dict[str, Any]:
        return {"state.state": 1, "cpu.time": cpu_s * 10**9, "balloon.rss": rss}

    hc.conn.records = [(d, stats(1, 100)) for d in doms]
    first = metrics_mod.collect_blocking(hc, {})  # type: ignore[arg-type]
    assert len(first.samples) == 50 and first.samples["u0"].values[0] is None
    hc.conn.records = [(d, stats(2, 200)) for d in doms]
    second = metrics_mod.collect_blocking(hc, first.counters)  # type: ignore[arg-type]
    assert hc.conn.calls == 2
    s = second.samples["u7"]
    assert s.values[0] is not None and s.values[0] > 0
    assert s.values[1] == 200 * 1024
    assert second.codes.keys() == second.samples.keys()


async def test_last_hour_is_served_at_full_resolution(manager: Any) -> None:
    await until(lambda: cycles(manager) >= 2, "collections")
    until_ts = time.time() - 1.0  # as a caller computed it a moment ago
    hist = manager.metrics.history("local", "test", since=until_ts - 3600, until=until_ts)
    assert hist["step"] == pytest.approx(0.1)
    hist = manager.metrics.history("local", "test", since=until_ts - 7200, until=until_ts)
    assert hist["step"] == 300


@pytest.mark.libvirtd
async def test_collects_from_the_real_daemon(settings: Settings) -> None:
    from kvmmanager.services.manager import Manager

    settings.libvirt.default_uri = "qemu:///system"
    m = Manager(settings)
    await m.start()
    try:
        await m.registry.get("local").wait_connected(60)
        await until(lambda: cycles(m) >= 2, "collections from libvirtd")
        hm = m.metrics.host("local")
        assert hm.errors == 0 and hm.last_error == ""
        running = {d.uuid for d in m.inventory.domains("local") if d.state == "running"}
        assert running <= hm.latest.keys()
    finally:
        await m.stop()


DAY = 86400.0


def hour_ago(hours: float, now: float | None = None) -> float:
    return ((now or time.time()) // 3600 - hours) * 3600


async def test_closed_bucket_rolls_up_into_the_hourly_tier(manager: Any) -> None:
    await until(lambda: cycles(manager) >= 1, "a collection")
    svc = manager.metrics
    uuid = manager.inventory.domain("local", "test").uuid
    hour = hour_ago(2)
    # Two 5-minute buckets of that hour, as the collector hands them over when they close.
    await svc.persist_bucket("local", hour, 300, {uuid: [10.0] * len(FIELDS)})
    await svc.persist_bucket("local", hour + 300, 300, {uuid: [30.0] * len(FIELDS)})
    week = await svc.ahistory("local", "test", window="7d")
    assert week["step"] == 3600 and week["until"] - week["since"] == pytest.approx(7 * DAY)
    i = week["series"]["ts"].index(hour)
    assert week["series"]["cpu_pct"][i] == pytest.approx(20.0, rel=1e-3)
    # The same through the blocking call, and 24 h from the 5-minute tier.
    assert svc.history("local", "test", window="7d")["series"] == week["series"]
    assert svc.history("local", "test", window="24h")["step"] == 300


async def test_collector_prunes_by_the_retention_with_its_clock(manager: Any) -> None:
    await until(lambda: cycles(manager) >= 1, "a collection")
    svc = manager.metrics
    uuid = manager.inventory.domain("local", "test").uuid
    now = time.time()
    keep_h, drop_h = hour_ago(29 * 24, now), hour_ago(31 * 24, now)
    keep_5m, drop_5m = hour_ago(20, now), hour_ago(26, now)
    for ts, step in ((keep_h, 3600), (drop_h, 3600), (keep_5m, 300), (drop_5m, 300)):
        metrics_store.save_bucket(manager.db, "local", ts, step, {uuid: [1.0] * len(FIELDS)})
    # (The collector may prune first, if a 5-minute bucket closes meanwhile: same result.)
    await svc.cleanup()
    assert sorted(metrics_store.load(manager.db, "local", 3600, 0)) == [keep_h]
    assert sorted(metrics_store.load(manager.db, "local", 300, 0)) == [keep_5m]
    # Two days later by the service's clock, the 29-day-old row is past 30 days too; the
    # collector's own bucket work (a bucket closes every 0.2 s here) deletes it.
    svc.clock = lambda: time.time() + 2 * DAY
    svc.host("local").down = DownsampledRing(span=3600, step=0.2)
    await until(
        lambda: not metrics_store.load(manager.db, "local", 3600, 0).get(keep_h),
        "the collector's clean-up",
    )


async def test_restart_keeps_the_week_and_the_month(manager: Any, settings: Settings) -> None:
    from kvmmanager.services.manager import Manager

    await until(lambda: cycles(manager) >= 1, "a collection")
    uuid = manager.inventory.domain("local", "test").uuid
    points = {hour_ago(5 * 24): 5.0, hour_ago(20 * 24): 20.0}
    for ts, cpu in points.items():
        metrics_store.save_bucket(manager.db, "local", ts, 3600, {uuid: [cpu] * len(FIELDS)})
    again = Manager(settings)
    await again.start()
    try:
        await until(lambda: "local" in again.metrics.hosts(), "the new manager's collector")
        # The VM is looked up in the inventory, which the host's connect fills.
        await again.registry.get("local").wait_connected(30)
        await until(lambda: any(d.name == "test" for d in again.inventory.domains("local")),
                    "the inventory")  # fmt: skip
        month = await again.metrics.ahistory("local", "test", window="30d")
        week = await again.metrics.ahistory("local", "test", window="7d")
    finally:
        await again.stop()
    got = dict(zip(month["series"]["ts"], month["series"]["cpu_pct"], strict=True))
    assert got == pytest.approx(points, rel=1e-3)
    assert week["series"]["ts"] == [hour_ago(5 * 24)]


async def test_ranges_beyond_what_is_kept_are_refused(manager: Any, settings: Settings) -> None:
    from kvmmanager.services.manager import Manager

    await until(lambda: cycles(manager) >= 1, "a collection")
    settings.metrics.retention_days = 7
    settings.metrics.persist = False
    short = Manager(settings)
    await short.start()
    try:
        await until(lambda: "local" in short.metrics.hosts(), "the collector")
        # The VM is looked up in the inventory, which the host's connect fills.
        await short.registry.get("local").wait_connected(30)
        await until(lambda: any(d.name == "test" for d in short.inventory.domains("local")),
                    "the inventory")  # fmt: skip
        with pytest.raises(InvalidInput) as e:
            await short.metrics.ahistory("local", "test", window="30d")
        assert e.value.field == "range" and "retention_days = 7" in e.value.message
        # Without persistence nothing is kept beyond the 24 h in memory.
        with pytest.raises(InvalidInput) as e:
            await short.metrics.ahistory("local", "test", window="7d")
        assert e.value.field == "range" and "metrics.persist" in e.value.message
        assert (await short.metrics.ahistory("local", "test", window="24h"))["step"] == 300
    finally:
        await short.stop()
