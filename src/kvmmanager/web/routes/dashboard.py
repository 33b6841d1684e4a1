"""The dashboard: hosts with their status and accelerator, VM counts, host load, warnings."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import libvirt
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from kvmmanager.api.deps import ManagerDep
from kvmmanager.core.errors import KvmmError
from kvmmanager.services.manager import Manager
from kvmmanager.services.users.service import Principal
from kvmmanager.web.routes.instances import instances_card
from kvmmanager.web.templating import principal, render

router = APIRouter(include_in_schema=False)


async def _host_card(manager: Manager, host: Any) -> dict[str, Any]:
    card: dict[str, Any] = {
        "conn": host,
        "info": None,
        "accel": None,
        "cpu_pct": None,
        "checks": [],
        "error": "",
    }
    if not host.connected:
        return card
    try:
        card["info"] = await manager.hosts.info(host.name)
        card["accel"] = await manager.hosts.accel(host.name)
        card["cpu_pct"] = await host.run(_cpu_percent, host, kind="read", op="host CPU use")
    except KvmmError as e:
        card["error"] = e.message
    try:
        report = await _health(manager, host.name)
        card["checks"] = [c for c in report.checks if c.status != "ok"]
    except KvmmError as e:
        card["error"] = e.message
    return card


CPU_SAMPLE_SECONDS = 0.25


def _cpu_percent(host: Any) -> float | None:
    """Host CPU use over a short window, from libvirt's node CPU counters (a remote host
    the same way); None where the driver keeps no counters (the test driver)."""
    try:
        first = host.conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS, 0)
        time.sleep(CPU_SAMPLE_SECONDS)  # two samples make a rate; runs in the host's worker
        second = host.conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS, 0)
    except libvirt.libvirtError:
        return None
    busy = sum(second.get(k, 0) - first.get(k, 0) for k in ("kernel", "user", "iowait"))
    total = busy + second.get("idle", 0) - first.get("idle", 0)
    return round(100 * busy / total, 1) if total > 0 else None


# Doctor checks read pools, networks and the ISO through libvirt: too much for every page
# view, and their answers change slowly. Each host's report is reused for a minute.
_HEALTH_TTL = 60.0
_health_cache: dict[tuple[int, str], tuple[float, Any]] = {}


async def _health(manager: Manager, host: str) -> Any:
    key = (id(manager), host)
    now = time.monotonic()
    cached = _health_cache.get(key)
    if cached and now - cached[0] < _HEALTH_TTL:
        return cached[1]
    report = await manager.doctor.check(host)
    _health_cache[key] = (now, report)
    return report


@router.get("/", name="web.dashboard", response_class=HTMLResponse)
async def dashboard(request: Request, manager: ManagerDep) -> HTMLResponse:
    hosts = manager.registry.all()
    cards = await asyncio.gather(*(_host_card(manager, h) for h in hosts))
    domains = manager.inventory.domains()
    states = Counter(d.state for d in domains)
    # The rows of a host that stopped answering are its last known state, not live: the
    # card says how many of the counts are such (per state and in all).
    stale_hosts = {h.name for h in hosts if not h.connected and h.stale_since is not None}
    stale_states = Counter(d.state for d in domains if d.host in stale_hosts)
    user: Principal | None = principal(request)
    # The instance list is an admin's, as GET /api/instances is.
    instances = await instances_card(manager) if user and user.has_role("admin") else None
    return render(
        request,
        "dashboard.html",
        active="dashboard",
        cards=cards,
        states=sorted(states.items()),
        stale_states=stale_states,
        stale_total=sum(stale_states.values()),
        vm_total=sum(states.values()),
        instances=instances,
    )
