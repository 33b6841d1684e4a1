"""The composition root: one Manager per process builds and owns everything else.

The lower layers (database, bus, inventory, host registry) and the core services (users,
audit, ownership, jobs) are built in `__init__`; every other service is built on first
use (a cached_property typed with its class). Each is given only what it uses: the
session factory, the bus, the inventory, the registry, its settings section, and the
services it calls. Where a service needs one that builds on its own module (the jobs'
undo needs storage, the installer needs the ISO deploy, the schedules need the runner's
clock), it takes a callback or a small Protocol of its own, and the Manager passes a
lambda read at call time. No service imports the Manager. A service with background work
gives itself `async def aclose()`, which `Manager.stop()` awaits.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from functools import cached_property
from pathlib import Path

from sqlalchemy import select

from kvmmanager.core.config import Settings, get_settings
from kvmmanager.core.errors import KvmmError
from kvmmanager.db import migrate, sqlite_owner
from kvmmanager.db.base import make_engine, make_session_factory
from kvmmanager.db.models import Host
from kvmmanager.services.alerts.email import EmailService
from kvmmanager.services.alerts.service import AlertService
from kvmmanager.services.alerts.webhooks import WebhookService
from kvmmanager.services.automation.batch import BatchService
from kvmmanager.services.automation.scheduler import Scheduler
from kvmmanager.services.automation.schedules import ScheduleService
from kvmmanager.services.backups.images import BackupImageService
from kvmmanager.services.backups.policies import BackupService
from kvmmanager.services.clones.helper_sweep import Sweeper, data_id
from kvmmanager.services.clones.service import CloneService
from kvmmanager.services.cloudinit.seed import CloudInitService
from kvmmanager.services.fleet.events import FleetEvents
from kvmmanager.services.fleet.instances import InstanceService, new_instance_id
from kvmmanager.services.fleet.lease import LeaseService
from kvmmanager.services.guest.agents import AgentService
from kvmmanager.services.guest.install import AgentInstallService
from kvmmanager.services.guest.iso_deploy import IsoService
from kvmmanager.services.hosts.doctor import DoctorService
from kvmmanager.services.hosts.service import HostService
from kvmmanager.services.jobs.interrupted import Here
from kvmmanager.services.jobs.service import JobService
from kvmmanager.services.jobs.undo import UndoTools
from kvmmanager.services.metrics.service import MetricsService
from kvmmanager.services.migration import MigrationService
from kvmmanager.services.networks.port_forwards import PortForwardService
from kvmmanager.services.networks.service import NetworkService
from kvmmanager.services.portability.export import ExportService
from kvmmanager.services.portability.templates import TemplateService
from kvmmanager.services.snapshots.service import SnapshotService
from kvmmanager.services.storage.service import StorageService
from kvmmanager.services.users.audit import AuditService
from kvmmanager.services.users.ownership import OwnershipService
from kvmmanager.services.users.service import UserService
from kvmmanager.services.vms.addresses import AddressService
from kvmmanager.services.vms.hostdevs import HostDeviceService
from kvmmanager.services.vms.service import VmService
from kvmmanager.services.vms.spice import SpiceService
from kvmmanager.virt.connection import ensure_event_loop
from kvmmanager.virt.events import EventBus
from kvmmanager.virt.inventory import Inventory
from kvmmanager.virt.preopen import AheadOpens
from kvmmanager.virt.registry import HostRegistry

log = logging.getLogger(__name__)

LOCAL_HOST = "local"
# Built at start (not on first use) because they listen to the bus from the first event.
EAGER_SERVICES = ("agents", "hosts")
LAZY_SERVICES = (
    "scheduler",
    "alerts",
    "webhooks",
    "email",
    "hosts",
    "vms",
    "storage",
    "networks",
    "agents",
    "iso",
    "doctor",
    "metrics",
    "instances",
    "fleet_events",
)


class Manager:
    def __init__(
        self, settings: Settings | None = None, *, ahead: AheadOpens | None = None
    ) -> None:
        """`ahead`: the hosts' first connections, begun by `serve` (virt/preopen.py)."""
        self.settings = settings or get_settings()
        self.engine = make_engine(self.settings.database_url)
        self.db = make_session_factory(self.engine)
        self.bus = EventBus()
        self.inventory = Inventory(self.bus)
        self.registry = HostRegistry(self.settings.libvirt, self.bus, self.inventory, ahead)
        # The core services, each given only what it uses. What they need of services
        # built later (lease, instances, storage, snapshots) they reach through callbacks
        # read at call time: those services sit above them.
        self.users = UserService(self.db, self.settings)
        self.audit = AuditService(self.db, self.settings.audit, lease_held=lambda: self.lease.held)
        self.ownership = OwnershipService(self.db, self.inventory)
        # This instance's id: its heartbeat row, its lease, the origin of its fleet events
        # and the owner of its jobs.
        self.instance_id = new_instance_id()
        undo = UndoTools(
            registry=self.registry,
            inventory=self.inventory,
            audit=self.audit,
            sync_pool=lambda host, pool: self.storage.sync_pool(host, pool),
            volume_users=lambda host, path, pool, volume: self.storage.volume_path_in_use_by(
                host, path, pool=pool, volume=volume
            ),
            delete_snapshot=lambda host, vm, name: self.snapshots.delete(host, vm, name),
        )
        self.jobs = JobService(
            self.db,
            self.bus,
            self.audit,
            undo,
            instance_id=lambda: self.instance_id,
            alive_ids=lambda: self.instances.alive_ids(),
            here=lambda: Here(hostname=socket.gethostname()[:255], address=self.address[:512]),
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = False
        # Abandoned temporary snapshots merged back once hosts connect (helper_sweep).
        self.helper_sweep: asyncio.Task[dict[str, list[str]]] | None = None
        # The first-start admin password, when this start created it (for `serve`'s banner).
        self.initial_admin_password: str | None = None
        # SQLite: this process's claim on the file while started (db/sqlite_owner.py).
        self._claimed: Path | None = None
        self._claiming = False

    # -- services, built on first use, each with what it uses ---------------------------

    @cached_property
    def hosts(self) -> HostService:
        return HostService(self.db, self.bus, self.inventory, self.registry, self.settings.libvirt)

    @cached_property
    def vms(self) -> VmService:
        return VmService(
            self.settings.spice,
            self.bus,
            self.inventory,
            self.registry,
            self.ownership,
            self.hosts,
            self.agents,
        )

    @cached_property
    def storage(self) -> StorageService:
        return StorageService(self.inventory, self.registry, self.ownership, self.jobs)

    @cached_property
    def networks(self) -> NetworkService:
        return NetworkService(self.inventory, self.registry)

    @cached_property
    def agents(self) -> AgentService:
        return AgentService(self.settings.agent, self.bus, self.inventory, self.registry)

    @cached_property
    def addresses(self) -> AddressService:
        return AddressService(self.registry, self.vms, self.agents)

    @cached_property
    def iso(self) -> IsoService:
        installer = AgentInstallService(
            self.settings.agent,
            self.bus,
            self.registry,
            self.vms,
            deploy=lambda host, pool: self.iso.deploy(host, pool),
        )
        return IsoService(self.settings, self.registry, self.storage, self.jobs, installer)

    @cached_property
    def doctor(self) -> DoctorService:
        return DoctorService(self.settings, self.registry, self.hosts)

    @cached_property
    def metrics(self) -> MetricsService:
        return MetricsService(
            self.settings.metrics,
            self.db,
            self.inventory,
            self.registry,
            self.lease,
            self.agents,
        )

    @cached_property
    def snapshots(self) -> SnapshotService:
        return SnapshotService(
            self.bus, self.inventory, self.registry, self.agents, self.vms, self.backup_images
        )

    @cached_property
    def clones(self) -> CloneService:
        return CloneService(
            self.settings.database_url,
            self.registry,
            self.jobs,
            self.vms,
            self.snapshots,
            self.cloudinit,
        )

    @cached_property
    def templates(self) -> TemplateService:
        return TemplateService(self.registry, self.clones)

    @cached_property
    def cloudinit(self) -> CloudInitService:
        return CloudInitService(self.settings, self.registry, self.storage, self.vms)

    @cached_property
    def migration(self) -> MigrationService:
        return MigrationService(self.registry, self.inventory, self.jobs, self.vms)

    @cached_property
    def batch(self) -> BatchService:
        return BatchService(self.inventory, self.ownership, self.vms, self.snapshots)

    @cached_property
    def export(self) -> ExportService:
        return ExportService(self.settings, self.registry, self.ownership, self.vms, self.storage)

    @cached_property
    def schedules(self) -> ScheduleService:
        return ScheduleService(
            self.db,
            self.ownership,
            self.backups,
            now=lambda: self.scheduler.now(),
            wake=lambda: self.scheduler.wake(),
        )

    @cached_property
    def scheduler(self) -> Scheduler:
        return Scheduler(
            self.db,
            self.bus,
            self.registry,
            self.lease,
            self.audit,
            self.ownership,
            self.batch,
            self.backups,
        )

    @cached_property
    def alerts(self) -> AlertService:
        return AlertService(
            self.db,
            self.bus,
            self.inventory,
            self.registry,
            self.lease,
            self.audit,
            self.metrics,
            self.webhooks,
            self.email,
            loop=lambda: self.loop,
        )

    @cached_property
    def webhooks(self) -> WebhookService:
        return WebhookService(self.db, self.settings.outbound, self.lease)

    @cached_property
    def backups(self) -> BackupService:
        return BackupService(
            self.db, self.ownership, self.batch, self.snapshots, self.backup_images
        )

    @cached_property
    def backup_images(self) -> BackupImageService:
        """Backups made with libvirt's backup API (also reached as backups.images)."""
        return BackupImageService(
            self.db, self.inventory, self.registry, self.agents, self.storage, self.vms
        )

    @cached_property
    def email(self) -> EmailService:
        return EmailService(self.db, self.settings.outbound)

    @cached_property
    def hostdevs(self) -> HostDeviceService:
        return HostDeviceService(self.registry, self.vms)

    @cached_property
    def spice(self) -> SpiceService:
        return SpiceService(self.settings, self.registry, self.vms)

    @cached_property
    def port_forwards(self) -> PortForwardService:
        return PortForwardService(self.vms)

    @cached_property
    def instances(self) -> InstanceService:
        return InstanceService(
            self.instance_id,
            self.db,
            self.settings.fleet,
            self.bus,
            self.lease,
            address=lambda: self.address,
            sweep_gone=self.jobs.sweep_gone,
        )

    @cached_property
    def fleet_events(self) -> FleetEvents:
        return FleetEvents(self.engine.url, self.bus, self.instance_id)

    @cached_property
    def lease(self) -> LeaseService:
        return LeaseService(self.db, self.settings.fleet, self.instance_id)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def address(self) -> str:
        """Where this instance serves, as other instances and operators are told."""
        server = self.settings.server
        return server.base_url or f"http://{server.host}:{server.port}"

    def claim_database(self) -> None:
        """SQLite: claim the file for this process, or raise DatabaseInUse naming the
        manager process that serves it (a second instance there would double-run the
        singleton work and miss the other's events). Nothing on PostgreSQL."""
        if not self._claiming:
            self._claimed = sqlite_owner.claim(self.engine, self.address)
            self._claiming = True

    def release_database(self) -> None:
        if self._claiming:
            sqlite_owner.release(self._claimed)
            self._claimed, self._claiming = None, False

    def prepare_database(self) -> None:
        """Migrate the schema and create the first admin; needs no event loop. Under the
        database's lock: of instances starting together, one migrates, the others wait
        and find the schema at head and the admin made."""
        with migrate.exclusive(self.engine):
            migrate.upgrade(self.engine)
            password = self.users.bootstrap_admin()
        if password is not None:
            self.initial_admin_password = password

    async def start(self) -> None:
        if self.started:
            return
        # Before anything touches the database: a second instance on a SQLite file is
        # refused before it migrates or registers.
        self.claim_database()
        try:
            await asyncio.to_thread(self.prepare_database)
        except BaseException:
            self.release_database()
            raise
        self.loop = asyncio.get_running_loop()
        self.jobs.attach_loop(self.loop)
        ensure_event_loop()
        for attr in EAGER_SERVICES:
            getattr(self, attr)
        started: list[str] = []
        for name, uri in await asyncio.to_thread(self.host_rows):
            try:
                # A row stored before the URI allow-list existed is not connected to.
                self.hosts.check_uri(uri)
                await self.registry.add(name, uri)
                started.append(uri)
            except KvmmError as e:
                # One bad row must not keep the manager (and every other host) down.
                log.error("host %s (%s) not started: %s", name, uri, e.message)
        if self.registry.ahead is not None:
            self.registry.ahead.discard_except(started)
        self.helper_sweep = self.loop.create_task(
            Sweeper(
                registry=self.registry,
                data=data_id(self.settings.database_url),
                delete_snapshot=lambda h, vm, name: self.snapshots.delete(h, vm, name),
                in_use=self.clones.snapshots_in_use,
                undo_finished=self.jobs.undo_finished,
            ).at_start(),
            name="helper-sweep",
        )
        # Host collectors follow the registry, so hosts added later are collected too.
        await self.metrics.start()
        self.scheduler.start()
        self.alerts.start()
        self.audit.start()
        # Last: an instance is listed once it serves (its heartbeat row).
        await self.instances.start()
        if self.engine.dialect.name == "postgresql":
            # Job, alert and schedule-run events reach the other instances' streams.
            await self.fleet_events.start()
        self.started = True

    async def stop(self) -> None:
        """Stop jobs, services holding background work, connections; close the DB."""
        sweep, self.helper_sweep = self.helper_sweep, None
        if sweep is not None and not sweep.done():
            sweep.cancel()
            await asyncio.wait({sweep})
        await self.jobs.shutdown()
        await self.audit.aclose()
        for attr in LAZY_SERVICES:
            service = self.__dict__.get(attr)
            # `aclose()` is the shutdown hook of a service; AgentService names it stop().
            hook = getattr(service, "aclose", None) or (
                getattr(service, "stop", None) if attr == "agents" else None
            )
            if hook is not None:
                try:
                    await hook()
                except Exception:
                    log.exception("stopping the %s service failed", attr)
        await self.registry.close()
        self.engine.dispose()
        self.release_database()
        self.started = False

    def host_rows(self) -> list[tuple[str, str]]:
        """(name, URI) of the stored hosts; the default URI as `local` when none is."""
        with self.db.begin() as s:
            rows = list(s.execute(select(Host.name, Host.uri).order_by(Host.id)))
            if not rows:
                uri = self.settings.libvirt.default_uri
                s.add(Host(name=LOCAL_HOST, uri=uri))
                rows = [(LOCAL_HOST, uri)]
        return [(n, u) for n, u in rows]

    async def __aenter__(self) -> Manager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
