"""`doctor`: is this host ready to run VMs and the agent? Each check says ok / warn / fail
and the one command that fixes it (the checks are in services.doctor_checks).

The same checks run for a host of the running manager (`DoctorService.check`, the API's
`GET /api/hosts/{host}/health`) and from the command line without a server
(`run_local(uri)`). Every report also updates the Prometheus gauges in `REGISTRY`, a
registry of its own: a metrics endpoint serves it with
`prometheus_client.generate_latest(REGISTRY)` (or adds its collectors to another).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import libvirt
from prometheus_client import CollectorRegistry, Gauge

from kvmmanager.core.config import Settings
from kvmmanager.iso.locator import IsoLocation, locate_iso
from kvmmanager.services.hosts.doctor_checks import (
    FAIL,
    LEVEL,
    OK,
    WARN,
    Check,
    CheckContext,
    collect_checks,
)
from kvmmanager.services.hosts.service import HostService
from kvmmanager.virt.connection import is_remote_uri
from kvmmanager.virt.errors import libvirt_message
from kvmmanager.virt.probe import probe_accel
from kvmmanager.virt.registry import HostRegistry

__all__ = [
    "FAIL",
    "OK",
    "REGISTRY",
    "WARN",
    "Check",
    "CheckContext",
    "DoctorService",
    "HealthReport",
    "collect_checks",
    "make_report",
    "run_local",
]

REGISTRY = CollectorRegistry()
CHECK_GAUGE = Gauge(
    "kvmm_doctor_check",
    "Result of a doctor check: 0 ok, 1 warn, 2 fail",
    ["host", "check"],
    registry=REGISTRY,
)
LIBVIRT_UP = Gauge("kvmm_doctor_libvirt_up", "libvirt reachable", ["host"], registry=REGISTRY)
KVM_USABLE = Gauge("kvmm_doctor_kvm_usable", "1 KVM, 0 TCG only", ["host"], registry=REGISTRY)
POOL_FREE = Gauge(
    "kvmm_doctor_pool_available_bytes",
    "Free bytes of the pool",
    ["host", "pool"],
    registry=REGISTRY,
)
ISO_CURRENT = Gauge(
    "kvmm_doctor_agent_iso_current",
    "1 when the current agent ISO is deployed",
    ["host"],
    registry=REGISTRY,
)


@dataclass(slots=True)
class HealthReport:
    host: str
    uri: str
    status: str
    checks: list[Check]
    checked_at: float = field(default_factory=time.time)

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_report(host: str, uri: str, checks: list[Check]) -> HealthReport:
    worst = max((c.status for c in checks), key=LEVEL.__getitem__, default=OK)
    report = HealthReport(host=host, uri=uri, status=worst, checks=checks)
    for c in checks:
        CHECK_GAUGE.labels(host, c.name).set(LEVEL[c.status])
        if c.name == "libvirt":
            LIBVIRT_UP.labels(host).set(1 if c.status == OK else 0)
        elif c.name == "kvm":
            KVM_USABLE.labels(host).set(1 if c.status == OK else 0)
        elif c.name == "agent_iso":
            ISO_CURRENT.labels(host).set(1 if c.status == OK else 0)
        elif c.name == "pool" and "available" in c.data:
            POOL_FREE.labels(host, c.data["pool"]).set(c.data["available"])
    return report


def unreachable(host: str, uri: str, reason: str) -> HealthReport:
    fix = "scripts/start-libvirtd  (systemd hosts: systemctl start libvirtd)"
    if is_remote_uri(uri):
        fix = f"check that libvirtd runs on the remote host and that {uri} is reachable"
    return make_report(host, uri, [Check("libvirt", FAIL, f"cannot reach {uri}: {reason}", fix)])


def _iso_facts(settings: Settings) -> tuple[IsoLocation, str | None]:
    loc = locate_iso(settings, build=False)
    sha = None
    if loc.path is not None and loc.current:
        sha = hashlib.sha256(loc.path.read_bytes()).hexdigest()
    return loc, sha


def _quiet(_ctx: object, _err: object) -> None:
    return None


def run_local(
    uri: str, settings: Settings, *, network: str = "default", pool: str | None = None
) -> HealthReport:
    """All checks against `uri` with a connection of our own: no manager server needed."""
    host = "local" if not is_remote_uri(uri) else uri
    # libvirt prints every error on stderr by default; the report says what went wrong.
    libvirt.registerErrorHandler(_quiet, None)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        return unreachable(host, uri, libvirt_message(exc))
    try:
        local = not is_remote_uri(uri)
        loc, sha = _iso_facts(settings)
        ctx = CheckContext(
            host=host,
            uri=uri,
            local=local,
            network=network,
            pool=pool or settings.agent.iso_pool,
            accel=probe_accel(conn, local=local),
            iso=loc,
            iso_sha256=sha,
            # No server here: name the host in fixes by a placeholder, deploy with --local.
            cli_host="" if local else " --host HOST",
            deploy_cmd="kvm-manager agent-iso deploy --local"
            + ("" if uri == settings.libvirt.default_uri else f" --uri {uri}"),
        )
        return make_report(host, uri, collect_checks(conn, ctx))
    finally:
        conn.close()


class DoctorService:
    def __init__(self, settings: Settings, registry: HostRegistry, hosts: HostService) -> None:
        self._settings = settings
        self._registry = registry
        self._hosts = hosts

    async def check(
        self, host: str, *, network: str = "default", pool: str | None = None
    ) -> HealthReport:
        h = self._registry.get(host)
        if not h.connected:
            return unreachable(host, h.uri, h.status_reason or h.status)
        settings = self._settings
        loc, sha = await asyncio.to_thread(_iso_facts, settings)
        ctx = CheckContext(
            host=host,
            uri=h.uri,
            local=not is_remote_uri(h.uri),
            network=network,
            pool=pool or settings.agent.iso_pool,
            accel=await self._hosts.accel(host),
            iso=loc,
            iso_sha256=sha,
            cli_host="" if host == "local" else f" --host {host}",
        )
        checks = await h.run(lambda: collect_checks(h.conn, ctx), kind="read", op="health check")
        return make_report(host, h.uri, checks)
