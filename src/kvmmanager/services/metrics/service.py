"""The metrics service: one bulk `getAllDomainStats` per host per interval, rates, history.

    manager.metrics.current("local")               # latest sample of every VM of a host
    manager.metrics.current("local", "web1")       # one VM (+ guest figures when known)
    manager.metrics.history("local", "web1", since, until)   # columnar, for graphs
    await manager.metrics.ahistory("local", "web1", window="30d")  # same, DB read off-loop
    await manager.metrics.wait_cycle("local", after_seq)      # live graphs (SSE)

Scheduling: each host has its own task ticking every `settings.metrics.interval_seconds`.
A tick whose previous collection of that host is still running is skipped and counted
(`overruns`), never queued, so a slow host cannot build a backlog; and since every host
has its own task and libvirt worker pool, a slow or dead host never delays another.
The libvirt call, the parsing and the rate arithmetic run in the host's worker thread;
the event loop only stores the result. Guest figures come from the agent's
`get_metrics` in a separate, slower task per host (guest.py).

History tiers: the last hour at the collection interval and 24 h of 5-minute means in
memory (history.py); with persistence on, each closed 5-minute bucket is written
to the database, its hour's mean rolled up there, and both tiers pruned (5-minute rows
after 24 h, hourly ones after `metrics.retention_days`): all in the collector's own
work, every 5 minutes, no poller of its own. Ranges beyond 24 h read the hourly rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from kvmmanager.core.config import MetricsSettings
from kvmmanager.core.errors import InvalidInput, KvmmError, NotFound
from kvmmanager.services.fleet.lease import LeaseService
from kvmmanager.services.guest.agents import AgentService
from kvmmanager.services.metrics import store as metrics_store
from kvmmanager.services.metrics.guest import poll_guests
from kvmmanager.services.metrics.history import (
    DOWNSAMPLE_STEP,
    DOWNSAMPLED_SECONDS,
    FULL_SECONDS,
    HOURLY_STEP,
    DownsampledRing,
    FullRing,
    columns,
    encode_row,
    value_columns,
)
from kvmmanager.services.metrics.rates import (
    FIELDS,
    LIST_FLAGS,
    STATS_FLAGS,
    Counters,
    Sample,
    build_sample,
    finite,
)
from kvmmanager.virt.inventory import Inventory
from kvmmanager.virt.registry import HostRegistry

if TYPE_CHECKING:
    from kvmmanager.virt.connection import HostConnection

log = logging.getLogger(__name__)

MIN_INTERVAL = 0.1
GUEST_INTERVAL_FACTOR = 5
MIN_GUEST_INTERVAL = 10.0
MAX_HISTORY_POINTS = 5000
FULL_RANGE_SLACK = 5.0
DAY = 86400
# The graphs' named ranges (the `range` query parameter), in seconds.
WINDOWS = {"1h": 3600, "6h": 6 * 3600, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}


@dataclass(slots=True)
class CycleResult:
    wall: float
    samples: dict[str, Sample]
    counters: dict[str, Counters]
    codes: dict[str, array]
    cpu_seconds: float
    call_seconds: float


@dataclass
class HostMetrics:
    """Everything the service knows about one host's VMs."""

    host: str
    full: FullRing
    down: DownsampledRing
    counters: dict[str, Counters] = field(default_factory=dict)
    latest: dict[str, Sample] = field(default_factory=dict)
    guest: dict[str, dict[str, Any]] = field(default_factory=dict)
    latest_ts: float = 0.0
    seq: int = 0
    cycles: int = 0
    overruns: int = 0
    errors: int = 0
    last_error: str = ""
    last_duration: float = 0.0
    last_cpu_seconds: float = 0.0
    last_call_seconds: float = 0.0
    inflight: asyncio.Task[None] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    cycle_done: asyncio.Event = field(default_factory=asyncio.Event)

    def stats(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "cycles": self.cycles,
            "overruns": self.overruns,
            "errors": self.errors,
            "last_error": self.last_error,
            "last_duration_seconds": self.last_duration,
            "last_cpu_seconds": self.last_cpu_seconds,
            "last_call_seconds": self.last_call_seconds,
            "vms": len(self.latest),
            "last_ts": self.latest_ts or None,
        }


def collect_blocking(hc: HostConnection, prev: dict[str, Counters]) -> CycleResult:
    """One collection of one host, in its worker thread: the one bulk call, then samples,
    rates and history codes for every domain."""
    cpu0 = time.thread_time()
    t0 = time.perf_counter()
    records = hc.conn.getAllDomainStats(STATS_FLAGS, LIST_FLAGS)
    call_seconds = time.perf_counter() - t0
    mono, wall = time.monotonic(), time.time()
    samples: dict[str, Sample] = {}
    counters: dict[str, Counters] = {}
    codes: dict[str, array] = {}
    for dom, stats in records:
        uuid = dom.UUIDString()
        sample, cur = build_sample(uuid, dom.name(), stats, dom.ID(), mono, prev.get(uuid))
        samples[uuid] = sample
        if cur is not None:
            counters[uuid] = cur
            codes[uuid] = encode_row(sample.values)
    return CycleResult(wall, samples, counters, codes, time.thread_time() - cpu0, call_seconds)


class MetricsService:
    def __init__(
        self,
        settings: MetricsSettings,
        db: sessionmaker[Session],
        inventory: Inventory,
        registry: HostRegistry,
        lease: LeaseService,
        agents: AgentService,
    ) -> None:
        self._db = db
        self._inventory = inventory
        self._registry = registry
        self._lease = lease
        self._agents = agents
        cfg = settings
        self.interval = max(MIN_INTERVAL, float(cfg.interval_seconds))
        # Settings not (yet) in MetricsSettings fall back to these defaults.
        self.persist = bool(getattr(cfg, "persist", True))
        self.guest_interval = float(
            getattr(cfg, "guest_interval_seconds", 0)
            or max(MIN_GUEST_INTERVAL, self.interval * GUEST_INTERVAL_FACTOR)
        )
        self.capacity = max(2, round(FULL_SECONDS / self.interval))
        self.retention_seconds = float(getattr(cfg, "retention_days", 30)) * DAY
        # Wall clock of the history's bookkeeping (pruning, "now" of a range): tests inject one.
        self.clock: Callable[[], float] = time.time
        self._hosts: dict[str, HostMetrics] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(), name="metrics")

    async def aclose(self) -> None:
        sup, self._supervisor = self._supervisor, None
        tasks = [sup] if sup else []
        for hm in self._hosts.values():
            tasks += hm.tasks
            if hm.inflight is not None:
                tasks.append(hm.inflight)
        tasks += list(self._background)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _supervise(self) -> None:
        """Follow the registry: start a collector for each new host, drop removed ones."""
        while True:
            try:
                names = {hc.name for hc in self._registry.all()}
                for name in names - self._hosts.keys():
                    await self._start_host(name)
                for name in self._hosts.keys() - names:
                    self._stop_host(name)
            except Exception:
                log.exception("metrics supervisor")
            await asyncio.sleep(self.interval)

    async def _start_host(self, name: str) -> None:
        hm = HostMetrics(name, FullRing(self.capacity), DownsampledRing())
        if self.persist:
            await self._restore(hm)
        # Listed only once restored: a reader never sees the host without its history.
        self._hosts[name] = hm
        hm.tasks = [
            asyncio.create_task(self._tick(hm), name=f"metrics-{name}"),
            asyncio.create_task(self._guest_loop(hm), name=f"metrics-guest-{name}"),
        ]

    def _stop_host(self, name: str) -> None:
        hm = self._hosts.pop(name)
        for t in [*hm.tasks, hm.inflight]:
            if t is not None:
                t.cancel()
        hm.cycle_done.set()

    # ---- collection --------------------------------------------------------------------

    async def _tick(self, hm: HostMetrics) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            if hm.inflight is not None and not hm.inflight.done():
                hm.overruns += 1
            else:
                hm.inflight = asyncio.create_task(self.collect_once(hm.host))
            next_tick += self.interval
            now = loop.time()
            if next_tick < now:
                # The loop itself stalled past whole intervals: those ticks are lost too.
                missed = int((now - next_tick) // self.interval) + 1
                hm.overruns += missed
                next_tick += missed * self.interval
            await asyncio.sleep(next_tick - now)

    async def collect_once(self, host: str) -> None:
        """One collection of `host` now (the ticker calls this; tests and benchmarks may)."""
        hm = self._hosts.get(host)
        if hm is None:
            raise NotFound(f"host '{host}' not found", field="host")
        started = time.perf_counter()
        try:
            hc = self._registry.get(host)
            if not hc.connected:
                # Not an error of ours: the connection reports (and retries) on its own.
                hm.last_error = f"host is {hc.status}"
                return
            result = await hc.run(collect_blocking, hc, hm.counters, kind="read", op="stats cycle")
        except KvmmError as e:
            hm.errors += 1
            hm.last_error = e.message
            return
        except Exception as e:
            log.exception("metrics collection of %s failed", host)
            hm.errors += 1
            hm.last_error = str(e)
            return
        self._apply(hm, result)
        hm.last_duration = time.perf_counter() - started

    def _apply(self, hm: HostMetrics, r: CycleResult) -> None:
        hm.counters = r.counters
        hm.latest = r.samples
        hm.latest_ts = r.wall
        hm.full.append(r.wall, r.codes)
        closed = hm.down.add(r.wall, {u: r.samples[u].values for u in r.codes if u in r.samples})
        present = r.samples.keys()
        if len(hm.full.rows) > len(present) or len(hm.down.rows) > len(present):
            hm.full.forget(present)
            hm.down.forget(present)
        for uuid in [u for u in hm.guest if u not in present]:
            del hm.guest[uuid]
        hm.cycles += 1
        hm.seq += 1
        hm.last_cpu_seconds = r.cpu_seconds
        hm.last_call_seconds = r.call_seconds
        hm.last_error = ""
        # Wake live-graph streams: they wait on the event of the cycle they saw last.
        hm.cycle_done.set()
        hm.cycle_done = asyncio.Event()
        # History writes (and their pruning) are singleton work: every instance collects
        # for its own live graphs, only the lease holder writes the buckets.
        if closed is not None and self.persist and self._lease.held:
            means = hm.down.means(closed)
            self._spawn(self.persist_bucket(hm.host, closed.start, hm.down.step, means))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def persist_bucket(
        self, host: str, start: float, step: float, means: dict[str, Any]
    ) -> None:
        """A closed 5-minute bucket: write it, refresh its hour's mean, drop expired rows."""
        try:
            await asyncio.to_thread(metrics_store.save_bucket, self._db, host, start, step, means)
            await asyncio.to_thread(
                metrics_store.rollup, self._db, host, start, int(step), HOURLY_STEP
            )
            await self.cleanup()
        except Exception:
            log.exception("saving metric history of %s failed", host)

    async def cleanup(self) -> int:
        """Delete what the retention policy no longer keeps; returns the rows deleted."""
        now = self.clock()
        deleted = await asyncio.to_thread(
            metrics_store.prune, self._db, int(DOWNSAMPLE_STEP), now - DOWNSAMPLED_SECONDS
        )
        deleted += await asyncio.to_thread(
            metrics_store.prune, self._db, HOURLY_STEP, now - self.retention_seconds
        )
        return deleted

    async def _restore(self, hm: HostMetrics) -> None:
        try:
            # A retention shortened while the manager was down applies from the start.
            await self.cleanup()
            buckets = await asyncio.to_thread(
                metrics_store.load,
                self._db,
                hm.host,
                int(hm.down.step),
                self.clock() - DOWNSAMPLED_SECONDS,
            )
        except Exception:
            log.exception("loading metric history of %s failed", hm.host)
            return
        for start, means in buckets.items():
            hm.down.store(start, means)

    async def _guest_loop(self, hm: HostMetrics) -> None:
        while True:
            await asyncio.sleep(self.guest_interval)
            targets = [
                (d.uuid, d.name)
                for d in self._inventory.domains(hm.host)
                if d.agent_status == "connected" and d.state == "running"
            ]
            stale = hm.guest.keys() - {u for u, _ in targets}
            for uuid in stale:
                hm.guest.pop(uuid, None)
            if not targets:
                continue

            async def call(uuid: str, host: str = hm.host) -> Any:
                return await self._agents.call(host, uuid, "get_metrics")

            try:
                await poll_guests(targets, call, hm.guest)
            except Exception:
                log.exception("guest metrics of %s failed", hm.host)

    # ---- reads -------------------------------------------------------------------------

    def hosts(self) -> list[str]:
        return sorted(self._hosts)

    def host(self, host: str) -> HostMetrics:
        hm = self._hosts.get(host)
        if hm is None:
            self._registry.get(host)  # NotFound naming the host, if it is unknown
            raise NotFound(f"no metrics yet for host '{host}'", field="host")
        return hm

    def _uuid(self, host: str, vm: str) -> str:
        return self._registry.domain(host, vm).uuid

    def vm_current(self, host: str, vm: str) -> dict[str, Any]:
        # The VM first: on a host that is not reachable that answer says why.
        uuid = self._uuid(host, vm)
        hm = self.host(host)
        sample = hm.latest.get(uuid)
        if sample is None:
            raise NotFound(f"no metrics yet for VM '{vm}' on host '{host}'", field="vm")
        out = sample.as_dict()
        for k in FIELDS:
            out[k] = finite(out[k])
        out["host"], out["ts"] = host, hm.latest_ts
        out["guest"] = hm.guest.get(uuid)
        return out

    def current(self, host: str) -> dict[str, Any]:
        hm = self.host(host)
        vms = []
        for uuid, s in hm.latest.items():
            row = {"uuid": uuid, "name": s.name, "state": s.state}
            row.update((k, finite(v)) for k, v in zip(FIELDS, s.values, strict=True))
            vms.append(row)
        vms.sort(key=lambda r: r["name"])
        return {"host": host, "ts": hm.latest_ts or None, "collector": hm.stats(), "vms": vms}

    def _plan(
        self,
        host: str,
        vm: str,
        since: float | None,
        until: float | None,
        window: str | None,
    ) -> tuple[HostMetrics, str, float, float, str]:
        """Validate a range and pick its tier: "full" (the last hour), "down" (5-minute
        means, the last 24 h, in memory) or "hourly" (the database)."""
        now = self.clock()
        if window is not None:
            if since is not None or until is not None:
                raise InvalidInput(
                    "give either 'range' or 'since'/'until', not both", field="range"
                )
            seconds = WINDOWS.get(window)
            if seconds is None:
                raise InvalidInput(
                    f"unknown range '{window}': one of {', '.join(WINDOWS)}", field="range"
                )
            if seconds > self.retention_seconds:
                raise InvalidInput(
                    f"range '{window}' is longer than the history kept "
                    f"(metrics.retention_days = {self.retention_seconds / DAY:g})",
                    field="range",
                )
            until, since = now, now - seconds
        until = now if until is None else until
        since = until - FULL_SECONDS if since is None else since
        if since > until:
            raise InvalidInput("'since' must not be after 'until'", field="since")
        if until - since > self.retention_seconds + 1:
            raise InvalidInput(
                f"the range may span at most {self.retention_seconds / DAY:g} days "
                "(metrics.retention_days)",
                field="since",
            )
        hm = self.host(host)
        uuid = self._uuid(host, vm)
        # Slack: "the last hour" computed by a caller a moment ago still means this ring.
        if since >= now - self.capacity * self.interval - FULL_RANGE_SLACK:
            tier = "full"
        elif since >= now - DOWNSAMPLED_SECONDS - FULL_RANGE_SLACK:
            tier = "down"
        elif self.persist:
            tier = "hourly"
        else:
            raise InvalidInput(
                "history older than 24 hours is kept only in the database, and "
                "metrics.persist is off",
                field="range" if window is not None else "since",
            )
        return hm, uuid, since, until, tier

    def _body(
        self, host: str, uuid: str, since: float, until: float, step: float, series: dict
    ) -> dict[str, Any]:
        return {
            "host": host,
            "uuid": uuid,
            "since": since,
            "until": until,
            "step": step,
            "fields": list(FIELDS),
            "series": series,
        }

    def _memory_series(
        self, hm: HostMetrics, uuid: str, since: float, until: float, tier: str
    ) -> tuple[float, dict[str, list]]:
        if tier == "full":
            ts, rows = hm.full.series(uuid, since, until)
            step = self.interval
        else:
            ts, rows = hm.down.series(uuid, since, until)
            step = hm.down.step
        if len(ts) > MAX_HISTORY_POINTS:
            ts, rows = ts[-MAX_HISTORY_POINTS:], rows[-MAX_HISTORY_POINTS:]
        return step, columns(ts, rows, FIELDS)

    def _hourly_series(
        self, host: str, uuid: str, since: float, until: float
    ) -> tuple[float, dict[str, list]]:
        ts, rows = metrics_store.series(self._db, host, uuid, HOURLY_STEP, since, until)
        return float(HOURLY_STEP), value_columns(ts, rows, FIELDS)

    def history(
        self,
        host: str,
        vm: str,
        since: float | None = None,
        until: float | None = None,
        window: str | None = None,
    ) -> dict[str, Any]:
        """Columnar series for [since, until] (Unix seconds; default: the last hour) or a
        named `window` (WINDOWS). Up to an hour back comes at full resolution, up to 24 h
        as 5-minute means, longer as hourly means from the database (a blocking read:
        from the event loop use `ahistory`)."""
        hm, uuid, since, until, tier = self._plan(host, vm, since, until, window)
        if tier == "hourly":
            step, series = self._hourly_series(host, uuid, since, until)
        else:
            step, series = self._memory_series(hm, uuid, since, until, tier)
        return self._body(host, uuid, since, until, step, series)

    async def ahistory(
        self,
        host: str,
        vm: str,
        since: float | None = None,
        until: float | None = None,
        window: str | None = None,
    ) -> dict[str, Any]:
        """`history`, with the database read (ranges beyond 24 h) in a worker thread."""
        hm, uuid, since, until, tier = self._plan(host, vm, since, until, window)
        if tier == "hourly":
            step, series = await asyncio.to_thread(self._hourly_series, host, uuid, since, until)
        else:
            step, series = self._memory_series(hm, uuid, since, until, tier)
        return self._body(host, uuid, since, until, step, series)

    async def wait_cycle(self, host: str, after_seq: int, seconds: float) -> int:
        """Wait until `host` completed a collection newer than `after_seq` (or `seconds` passed);
        returns the latest seq."""
        hm = self.host(host)
        if hm.seq > after_seq:
            return hm.seq
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await hm.cycle_done.wait()
        return hm.seq
