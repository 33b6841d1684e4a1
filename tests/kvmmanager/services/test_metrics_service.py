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
from kvmmanager.services import metrics as metrics_mod
from kvmmanager.services import metrics_store
from kvmmanager.services.metrics_history import DownsampledRing
from kvmmanager.services.metrics_rates import FIELDS

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
    with pytest.raises(InvalidInput):
        manager.metrics.history("local", "test", since=0.0, until=3 * 86400.0)


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
        lambda: metrics_store.load(manager.db, "local", 0).items(), "a persisted bucket"
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
        hist = again.metrics.history("local", "test", since=old - 1, until=time.time())
        assert hist["step"] == 300
        i = hist["series"]["ts"].index(old)
        assert hist["series"]["cpu_pct"][i] == pytest.approx(42.0, rel=1e-3)
    finally:
        await again.stop()
    # Saving the same bucket again replaces it (a restart within one bucket).
    metrics_store.save_bucket(manager.db, "local", old, 300, {uuid: [1.0] * len(FIELDS)})
    assert metrics_store.load(manager.db, "local", old)[old][uuid][0] == 1.0
    assert metrics_store.prune(manager.db, old + 1) >= 1


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
