"""Keeping a host's inventory equal to libvirt between resyncs: its events.

libvirt fires callbacks on the asyncio loop (libvirtaio). A callback only queues a re-read
of that one object; re-reads of one object are serialized (in event order), and wait for
a running resync, so the inventory never goes back to an older state. Events of a
connection that has since been replaced (another generation) are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import libvirt

from kvmmanager.core.config import LibvirtSettings
from kvmmanager.core.errors import KvmmError, NotFound
from kvmmanager.virt import readers
from kvmmanager.virt.calls import HostWorkers
from kvmmanager.virt.events import Event, EventBus
from kvmmanager.virt.helper_guests import is_helper_guest
from kvmmanager.virt.inventory import Inventory

log = logging.getLogger(__name__)

# Marks an event of a connection that has since been replaced: ignore it.
STALE: Any = object()


class Serializer:
    """Per-key FIFO locks, dropped when unused so 10,000 domains do not leave 10,000 locks."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> Any:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class HostEvents:
    """Mixin of HostConnection: the attributes below are HostConnection's."""

    name: str
    bus: EventBus
    inventory: Inventory
    settings: LibvirtSettings
    workers: HostWorkers
    _conn: libvirt.virConnect | None
    _gen: int
    _loop: asyncio.AbstractEventLoop | None
    _resynced: asyncio.Event | None
    _tasks: set[asyncio.Task[Any]]
    _serial: Serializer
    _guarded: Callable[..., Any]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _schedule(
        self, gen: int, coro_fn: Callable[..., Coroutine[Any, Any, None]], *args: Any
    ) -> None:
        """Called from libvirt callbacks: hop onto the loop (we may not be on it)."""
        loop = self._loop
        if loop is None or gen != self._gen:
            return

        def go() -> None:
            if gen == self._gen:
                self._spawn(coro_fn(gen, *args))

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(go)

    def _dispatch_domain(self, gen: int) -> readers.DomainEventSink:
        return lambda dom, event: self._schedule(gen, self._domain_event, dom, event)

    def _dispatch_pool(self, gen: int) -> readers.NamedEventSink:
        return lambda obj, event: self._schedule(gen, self._pool_event, obj, event)

    def _dispatch_network(self, gen: int) -> readers.NamedEventSink:
        return lambda obj, event: self._schedule(gen, self._network_event, obj, event)

    async def _domain_event(
        self, gen: int, dom: libvirt.virDomain, event: readers.ObjectEvent
    ) -> None:
        uuid = dom.UUIDString()
        port = event.data.get("vserport") if event.kind is None else None
        info = await self._refresh(
            gen,
            f"domain:{uuid}",
            functools.partial(readers.read_domain, port=port) if port else readers.read_domain,
            dom,
            self.inventory.put_domain,
            lambda: self.inventory.remove_domain(self.name, uuid),
        )
        if info is not STALE and event.kind and not is_helper_guest(dom.name()):
            data = {"name": dom.name(), **event.data}
            if event.kind == "domain.lifecycle":
                data["state"] = info.state if info is not None else "undefined"
            self.bus.publish(Event(event.kind, host=self.name, subject=uuid, data=data))

    async def _pool_event(
        self, gen: int, pool: libvirt.virStoragePool, event: readers.ObjectEvent
    ) -> None:
        name = pool.name()
        info = await self._refresh(
            gen,
            f"pool:{name}",
            readers.read_pool,
            pool,
            self.inventory.put_pool,
            lambda: self.inventory.remove_pool(self.name, name),
        )
        if info is not STALE and event.kind:
            self.bus.publish(Event(event.kind, host=self.name, subject=name, data=event.data))

    async def _network_event(
        self, gen: int, net: libvirt.virNetwork, event: readers.ObjectEvent
    ) -> None:
        name = net.name()
        info = await self._refresh(
            gen,
            f"network:{name}",
            readers.read_network,
            net,
            self.inventory.put_network,
            lambda: self.inventory.remove_network(self.name, name),
        )
        if info is not STALE and event.kind:
            self.bus.publish(Event(event.kind, host=self.name, subject=name, data=event.data))

    async def _refresh(
        self,
        gen: int,
        key: str,
        reader: Callable[[str, Any], Any],
        obj: Any,
        put: Callable[[Any], Any],
        remove: Callable[[], Any],
    ) -> Any:
        """Re-read one object (serialized per object, after any running resync) and store
        it, or drop it when libvirt no longer has it. Returns the record, None when removed,
        STALE when the event is to be ignored."""
        async with self._serial.hold(key):
            assert self._resynced is not None
            await self._resynced.wait()
            conn = self._conn
            if conn is None or gen != self._gen:
                return STALE
            call = functools.partial(
                self._guarded, conn, gen, reader, (self.name, obj), {}, f"re-read {key}"
            )
            try:
                info = await self.workers.call(
                    call,
                    op=f"re-read {key}",
                    kind="read",
                    deadline=self.settings.deadline_read_seconds,
                )
            except NotFound:
                info = None
            except KvmmError as exc:
                log.warning("host %s: re-reading %s failed: %s", self.name, key, exc)
                return STALE
            if gen != self._gen:
                return STALE
            if info is None:
                remove()
                return None
            return put(info)
