"""Manager instances that share one database know each other (issue 16 item 2).

Each instance registers a row (id, host name, address, version, pid, start time) when it
starts and refreshes `last_seen` every `fleet.heartbeat_seconds`; it deletes its row when
it stops. The same beat takes or renews the singleton lease (services/fleet/lease.py), so the
listing says which instance runs the singleton work. An instance is listed as alive while
its last heartbeat is younger than three beats (at least STALE_AFTER_SECONDS); rows
older than FORGET_AFTER_SECONDS are removed by whichever instance beats next.

Each instance also tells the event bus (and, through the fleet-event relay, every other
instance's stream) about itself, so the dashboard's instance list follows without a
reload: `instance.changed` when it starts, stops, takes or loses the lease, and
`instance.heartbeat` at each beat. An instance killed with -9 sends nothing more: a reader
sees its heartbeats stop (and, if it held the lease, the next holder's `instance.changed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from kvmmanager import __version__
from kvmmanager.core.config import FleetSettings
from kvmmanager.db.fleet_models import Instance
from kvmmanager.db.models import utcnow
from kvmmanager.services.fleet.lease import LeaseService
from kvmmanager.virt.events import Event, EventBus

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
STALE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS
FORGET_AFTER_SECONDS = 24 * 3600.0

INSTANCE_CHANGED = "instance.changed"  # data: {"what": started|stopped|lease_taken|lease_lost}
INSTANCE_HEARTBEAT = "instance.heartbeat"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True


@dataclass(frozen=True)
class InstanceInfo:
    id: str
    hostname: str
    address: str
    version: str
    pid: int
    started_at: datetime
    last_seen: datetime
    alive: bool
    this: bool  # the instance answering
    lease_holder: bool  # runs the singleton work (holds the live singleton lease)


def new_instance_id() -> str:
    """A new id for an instance: one per Manager (process start), never reused."""
    return str(uuid.uuid4())


class InstanceService:
    def __init__(
        self,
        instance_id: str,
        db: sessionmaker[Session],
        fleet: FleetSettings,
        bus: EventBus,
        lease: LeaseService,
        *,
        address: Callable[[], str],
        sweep_gone: Callable[[], int],
    ) -> None:
        """`instance_id`: this instance's id (new_instance_id(), also the lease holder's);
        `address`: where it serves, read at each registration; `sweep_gone`: fails the
        jobs of dead instances (JobService.sweep_gone), run while holding the lease."""
        self.id = instance_id
        self._db = db
        self._bus = bus
        self._lease = lease
        self._address = address
        self._sweep_gone = sweep_gone
        self.heartbeat_seconds = float(fleet.heartbeat_seconds)
        self._task: asyncio.Task[None] | None = None
        lease.on_change(self._lease_changed)

    def _publish(self, kind: str, what: str) -> None:
        self._bus.publish(Event(kind=kind, host="", subject=self.id, data={"what": what}))

    async def _lease_changed(self, held: bool) -> None:
        self._publish(INSTANCE_CHANGED, "lease_taken" if held else "lease_lost")

    def register(self) -> None:
        now = utcnow()
        with self._db.begin() as s:
            s.merge(
                Instance(
                    id=self.id,
                    hostname=socket.gethostname()[:255],
                    address=self._address()[:512],
                    version=__version__,
                    pid=os.getpid(),
                    started_at=now,
                    last_seen=now,
                )
            )

    def beat(self) -> None:
        """Refresh this instance's row (re-created if someone removed it); forget rows
        of instances gone for a day."""
        now = utcnow()
        with self._db.begin() as s:
            row = s.get(Instance, self.id)
            if row is None:
                s.add(
                    Instance(
                        id=self.id,
                        hostname=socket.gethostname()[:255],
                        address=self._address()[:512],
                        version=__version__,
                        pid=os.getpid(),
                        started_at=now,
                        last_seen=now,
                    )
                )
            else:
                row.last_seen = now
            cutoff = now - timedelta(seconds=FORGET_AFTER_SECONDS)
            s.execute(delete(Instance).where(Instance.last_seen < cutoff))

    def _stale(self) -> timedelta:
        return timedelta(seconds=max(STALE_AFTER_SECONDS, 3 * self.heartbeat_seconds))

    def alive_ids(self) -> list[str]:
        """Ids of the instances whose heartbeat is recent (this one's once registered),
        less those of this machine whose process is gone: a manager restarted after a
        kill -9 must not wait out its predecessor's heartbeat window."""
        cutoff = utcnow() - self._stale()
        here = socket.gethostname()[:255]
        with self._db() as s:
            rows = list(
                s.execute(
                    select(Instance.id, Instance.hostname, Instance.pid).where(
                        Instance.last_seen >= cutoff
                    )
                )
            )
        return [i for i, host, pid in rows if host != here or _process_exists(pid)]

    @property
    def stale_after_seconds(self) -> float:
        """How long after its last heartbeat an instance is no longer listed as alive."""
        return self._stale().total_seconds()

    def list(self) -> list[InstanceInfo]:
        now = utcnow()
        stale = self._stale()
        with self._db.begin() as s:
            rows = list(s.scalars(select(Instance).order_by(Instance.started_at, Instance.id)))
        lease = self._lease.info()
        holder = lease.holder if lease is not None and lease.live else None
        return [
            InstanceInfo(
                id=r.id,
                hostname=r.hostname,
                address=r.address,
                version=r.version,
                pid=r.pid,
                started_at=r.started_at,
                last_seen=r.last_seen,
                alive=now - r.last_seen <= stale,
                this=r.id == self.id,
                lease_holder=r.id == holder,
            )
            for r in rows
        ]

    async def start(self) -> None:
        await asyncio.to_thread(self.register)
        # The first beat's lease attempt, now: a lone instance runs its singletons at once.
        await self._lease.renew()
        self._publish(INSTANCE_CHANGED, "started")
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="kvmm-heartbeat")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            # The lease first: it must not wait behind a slow heartbeat row.
            held = await self._lease.renew()
            try:
                await asyncio.to_thread(self.beat)
                self._publish(INSTANCE_HEARTBEAT, "beat")
                if held:
                    # Singleton work: the jobs of instances that died are failed and undone.
                    swept = await asyncio.to_thread(self._sweep_gone)
                    if swept:
                        log.warning("%d job(s) of manager instances gone were failed", swept)
            except Exception:
                # A database hiccup must not end the heartbeat: the next beat retries.
                log.exception("instance heartbeat failed")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # Released before the row goes: the next instance's beat takes over.
        await self._lease.release()

        def leave() -> None:
            with self._db.begin() as s:
                s.execute(delete(Instance).where(Instance.id == self.id))

        try:
            await asyncio.to_thread(leave)
        except Exception:
            log.exception("removing this instance's row failed")
        self._publish(INSTANCE_CHANGED, "stopped")
