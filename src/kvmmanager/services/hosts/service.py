"""Hosts: the persisted list of libvirt connections, their status, and what a host offers.

The host table (name, uri) lives in the manager's database (design decision 2); the
running connections live in the HostRegistry. Everything else is asked of libvirt:
node info, capabilities, domain capabilities, versions and the KVM-or-TCG verdict.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import libvirt
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from kvmmanager.core.config import LibvirtSettings
from kvmmanager.core.errors import Conflict, KvmmError, NotFound
from kvmmanager.db.models import Host
from kvmmanager.services.hosts.uris import check_host_uri
from kvmmanager.virt.connection import HostConnection
from kvmmanager.virt.events import Event, EventBus
from kvmmanager.virt.inventory import Inventory
from kvmmanager.virt.probe import AccelInfo, host_accel, start_probe, sweep_probe_guests
from kvmmanager.virt.registry import HostRegistry, validate_host_name, validate_uri
from kvmmanager.virt.xml.capabilities import Capabilities, DomainCapabilities

log = logging.getLogger(__name__)

# Published when this instance adds or removes a host; relayed to the other instances
# sharing the database (services/fleet/events.py), which then follow the host table.
HOSTS_CHANGED = "hosts.changed"


def version_string(number: int) -> str:
    """libvirt's packed version (major * 1,000,000 + minor * 1,000 + release)."""
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def _optional(fn: Any, *args: Any) -> Any:
    """A value some drivers do not offer (test driver: memory stats): None, not an error."""
    try:
        return fn(*args)
    except libvirt.libvirtError:
        return None


def read_node_info(conn: libvirt.virConnect) -> dict[str, Any]:
    """Blocking: everything /info shows except the accelerator."""
    model, memory_mib, cpus, mhz, nodes, sockets, cores, threads = conn.getInfo()
    hv_version = _optional(conn.getVersion)
    return {
        "hostname": _optional(conn.getHostname),
        "uri": conn.getURI(),
        "driver": conn.getType(),
        "libvirt_version": version_string(conn.getLibVersion()),
        "hypervisor_version": version_string(hv_version) if hv_version else None,
        "cpu": {
            "model": model,
            "count": cpus,
            "mhz": mhz,
            "numa_nodes": nodes,
            "sockets": sockets,
            "cores": cores,
            "threads": threads,
        },
        "memory_mib": memory_mib,
        "memory_stats_kib": _optional(
            conn.getMemoryStats, libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0
        ),
        "cpu_stats_ns": _optional(conn.getCPUStats, libvirt.VIR_NODE_CPU_STATS_ALL_CPUS, 0),
    }


def capabilities_dict(xml: str) -> dict[str, Any]:
    caps = Capabilities.from_xml(xml)
    return {
        "host": {
            "uuid": caps.host_uuid,
            "arch": caps.host_arch,
            "cpu_model": caps.host_cpu_model,
            "cpu_vendor": caps.host_cpu_vendor,
            "cpu_features": list(caps.host_cpu_features),
        },
        "guests": [
            {
                "os_type": g.os_type,
                "arch": g.arch,
                "domain_types": g.domain_types,
                "machines": caps.machines(g.arch),
            }
            for g in caps.guests
        ],
    }


def domain_capabilities_dict(xml: str) -> dict[str, Any]:
    dc = DomainCapabilities.from_xml(xml)
    return {
        "domain_type": dc.domain_type,
        "arch": dc.arch,
        "machine": dc.machine,
        "emulator": dc.path,
        "vcpu_max": dc.vcpu_max,
        "firmware": {
            "uefi": dc.supports_uefi,
            "secure_boot": dc.supports_secure_boot,
            "values": list(dc.firmware_values),
            "loader_paths": list(dc.firmware_paths),
        },
        "tpm": {
            "supported": dc.supports_tpm(),
            "models": list(dc.tpm_models),
            "backends": list(dc.tpm_backend_models),
        },
        "disk": {"devices": list(dc.disk_devices), "buses": list(dc.disk_buses)},
        "graphics_types": list(dc.graphics_types),
        "video_models": list(dc.video_models),
        "cpu_modes": dc.cpu_modes(),
        "virtio_serial": dc.supports_virtio_serial(),
    }


class HostService:
    def __init__(
        self,
        db: sessionmaker[Session],
        bus: EventBus,
        inventory: Inventory,
        registry: HostRegistry,
        settings: LibvirtSettings,
    ) -> None:
        self._db = db
        self._bus = bus
        self._inventory = inventory
        self._registry = registry
        self._libvirt = settings
        self._tasks: set[asyncio.Task[None]] = set()
        # One change of the registry at a time: an add/remove here and a follow of the
        # table after another instance's change never interleave.
        self._changing = asyncio.Lock()
        # Every (re)connect of a host: remove the probe guests abandoned there, then start
        # its accelerator probe in the background (a create never waits for it long).
        bus.add_listener(self._on_event)

    def _on_event(self, event: Event) -> None:
        if event.kind == HOSTS_CHANGED and event.origin:
            # Another instance added or removed a host: the table says which.
            self._spawn(self.follow_table())
            return
        if event.kind != "host.status" or event.data.get("status") != "connected":
            return
        if event.host not in self._registry:
            return
        self._spawn(self._connected(event.host))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # published outside the loop (tests): nothing to start
            work.close()
            return
        task = loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def follow_table(self) -> None:
        """Connect the hosts the table has and the registry lacks, disconnect those the
        table no longer has: what another instance sharing the database added or removed
        (services/fleet/events.py tells this one to look)."""
        async with self._changing:
            rows = await asyncio.to_thread(self._uris)
            for name, uri in rows.items():
                if name in self._registry:
                    continue
                try:
                    self.check_uri(uri)
                    await self._registry.add(name, uri)
                except KvmmError as e:
                    log.error("host %s (%s) not started: %s", name, uri, e.message)
                else:
                    log.info("host %s added through another instance: connecting", name)
            for host in self._registry.all():
                if host.name not in rows:
                    await self._registry.remove(host.name)
                    log.info("host %s removed through another instance", host.name)

    def _uris(self) -> dict[str, str]:
        with self._db() as s:
            return {name: uri for name, uri in s.execute(select(Host.name, Host.uri))}

    def _announce(self, name: str, change: str) -> None:
        self._bus.publish(Event(HOSTS_CHANGED, host=name, data={"change": change}))

    async def _connected(self, name: str) -> None:
        host = self._host(name)
        try:
            removed = await host.run(lambda: sweep_probe_guests(host.conn), op="probe sweep")
        except KvmmError as e:
            log.warning("host %s: abandoned probe guests not checked: %s", name, e.message)
        else:
            for guest in removed:
                log.warning("host %s: removed abandoned probe guest %s", name, guest)
        if self._libvirt.accel == "auto" and host.connected:
            start_probe(host)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- the host list -----------------------------------------------------------------

    def _host(self, name: str) -> HostConnection:
        return self._registry.get(name)

    def _rows(self) -> dict[str, Host]:
        with self._db() as s:
            return {h.name: h for h in s.scalars(select(Host))}

    def _summary(self, host: HostConnection, row: Host | None) -> dict[str, Any]:
        return {
            **host.status_dict(),
            "created_at": row.created_at if row is not None else None,
            "vm_count": len(self._inventory.domains(host.name)),
        }

    async def list(self) -> list[dict[str, Any]]:
        rows = await asyncio.to_thread(self._rows)
        return [self._summary(h, rows.get(h.name)) for h in self._registry.all()]

    async def get(self, name: str) -> dict[str, Any]:
        host = self._host(name)
        rows = await asyncio.to_thread(self._rows)
        return self._summary(host, rows.get(name))

    async def add(self, name: str, uri: str) -> dict[str, Any]:
        """Persist the host and start connecting; answers at once with the status
        (`connecting`, or `failed` + reason later: the host is kept and retried)."""
        validate_host_name(name)
        validate_uri(uri)
        self.check_uri(uri)
        async with self._changing:
            if name in self._registry:
                raise Conflict(f"host '{name}' already exists", field="name")
            await asyncio.to_thread(self._insert, name, uri)
            try:
                await self._registry.add(name, uri)
            except BaseException:
                await asyncio.to_thread(self._delete, name)
                raise
        self._announce(name, "added")
        return await self.get(name)

    def check_uri(self, uri: str) -> str:
        """InvalidInput (field `uri`) unless the allow-list of host URIs accepts `uri`."""
        libvirt_settings = self._libvirt
        return check_host_uri(
            uri,
            allow_test_driver=libvirt_settings.allow_test_driver,
            trusted=libvirt_settings.default_uri,
        )

    def _insert(self, name: str, uri: str) -> None:
        try:
            with self._db.begin() as s:
                s.add(Host(name=name, uri=uri))
        except IntegrityError as exc:
            raise Conflict(f"host '{name}' already exists", field="name") from exc

    def _delete(self, name: str) -> int:
        with self._db.begin() as s:
            return s.execute(delete(Host).where(Host.name == name)).rowcount

    async def remove(self, name: str) -> None:
        """Forget the host (its VMs are untouched: they live on in libvirt)."""
        async with self._changing:
            if name not in self._registry:
                # Not running but maybe still stored (e.g. a half-failed add): clean it up.
                if await asyncio.to_thread(self._delete, name):
                    self._announce(name, "removed")
                    return
                raise NotFound(f"host '{name}' not found", field="host")
            await self._registry.remove(name)
            await asyncio.to_thread(self._delete, name)
        self._announce(name, "removed")

    # ---- what a host offers ------------------------------------------------------------

    async def accel(self, name: str) -> AccelInfo:
        override = self._libvirt.accel
        wait = self._libvirt.accel_wait_seconds
        return await host_accel(self._host(name), override, wait=wait)

    async def info(self, name: str) -> dict[str, Any]:
        host = self._host(name)
        info = await host.run(lambda: read_node_info(host.conn), kind="read", op="node info")
        info["name"] = name
        info["accel"] = (await self.accel(name)).to_dict()
        return info

    async def capabilities(self, name: str) -> dict[str, Any]:
        host = self._host(name)
        xml = await host.run(lambda: host.conn.getCapabilities(), kind="read", op="capabilities")
        return capabilities_dict(xml)

    async def domain_capabilities(
        self,
        name: str,
        arch: str | None = None,
        machine: str | None = None,
        domain_type: str | None = None,
    ) -> dict[str, Any]:
        """Domain capabilities for the domain type guests would get (kvm or qemu) unless
        another is asked for."""
        host = self._host(name)
        if domain_type is None:
            domain_type = (await self.accel(name)).domain_type
        try:
            xml = await host.run(
                lambda: host.conn.getDomainCapabilities(None, arch, machine, domain_type, 0),
                kind="read",
                op="domain capabilities",
            )
        except KvmmError as exc:
            exc.message = f"host '{name}': {exc.message}"
            exc.args = (exc.message,)
            raise
        return domain_capabilities_dict(xml)
