"""The in-memory inventory: what every host has, kept current by libvirt events.

Reads are pure dictionary lookups (listing 1,000 VMs makes no libvirt call). Writes come
from `HostConnection` on the event loop thread, after it re-read one object from libvirt;
each write that changes something publishes `domain.added/updated/removed` (and
`domain.agent` when an agent channel changed state) on the bus.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from kvmmanager.core.errors import InvalidInput, NotFound
from kvmmanager.virt.events import Event, EventBus
from kvmmanager.virt.helper_guests import is_helper_guest

AgentStatus = Literal["absent", "connecting", "connected", "unresponsive"]
QgaStatus = Literal["absent", "connected", "disconnected"]
AGENT_STATUSES: tuple[str, ...] = ("absent", "connecting", "connected", "unresponsive")


@dataclass(frozen=True, slots=True)
class OsInfo:
    type: str = ""
    arch: str = ""
    machine: str = ""
    firmware: str = "bios"
    # osinfo-db's id from the domain's libosinfo metadata ("" when it names none).
    osinfo_id: str = ""


@dataclass(frozen=True, slots=True)
class GraphicsInfo:
    type: str
    port: int | None = None
    listen: str | None = None


@dataclass(frozen=True, slots=True)
class DiskInfo:
    target: str
    device: str = "disk"
    source: str | None = None
    pool: str | None = None
    volume: str | None = None
    format: str | None = None
    bus: str | None = None
    readonly: bool = False


@dataclass(frozen=True, slots=True)
class NicInfo:
    mac: str | None
    type: str
    source: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    name: str
    type: str
    state: str | None = None


@dataclass(frozen=True, slots=True)
class DomainInfo:
    host: str
    name: str
    uuid: str
    id: int | None = None
    state: str = "nostate"
    state_reason: str = "unknown"
    persistent: bool = True
    autostart: bool = False
    vcpus: int = 0
    max_vcpus: int = 0
    memory_kib: int = 0
    max_memory_kib: int = 0
    title: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    owner: str | None = None
    os: OsInfo = field(default_factory=OsInfo)
    graphics: tuple[GraphicsInfo, ...] = ()
    disks: tuple[DiskInfo, ...] = ()
    nics: tuple[NicInfo, ...] = ()
    channels: tuple[ChannelInfo, ...] = ()
    # Status of the project's agent channel as far as libvirt can tell ("connected" = the
    # guest opened the port); the agent client refines it with set_agent_status().
    agent_status: str = "absent"
    qga_status: str = "absent"
    updated_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def same_as(self, other: DomainInfo) -> bool:
        """Equal apart from the timestamp: an event that changed nothing publishes nothing."""
        return dataclasses.replace(other, updated_at=self.updated_at) == self


@dataclass(frozen=True, slots=True)
class PoolInfo:
    host: str
    name: str
    uuid: str
    state: str = "inactive"
    type: str = ""
    persistent: bool = True
    autostart: bool = False
    capacity: int = 0
    allocation: int = 0
    available: int = 0
    path: str | None = None
    updated_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def same_as(self, other: PoolInfo) -> bool:
        return dataclasses.replace(other, updated_at=self.updated_at) == self


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    host: str
    name: str
    uuid: str
    active: bool = False
    persistent: bool = True
    autostart: bool = False
    bridge: str | None = None
    forward_mode: str | None = None
    updated_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def same_as(self, other: NetworkInfo) -> bool:
        return dataclasses.replace(other, updated_at=self.updated_at) == self


def _summary(info: DomainInfo) -> dict[str, Any]:
    return {"name": info.name, "state": info.state, "reason": info.state_reason}


# The pool and network tables share their put/remove code.
_Named = TypeVar("_Named", PoolInfo, NetworkInfo)


class Inventory:
    """Per host: domains by uuid, pools and networks by name."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self._domains: dict[str, dict[str, DomainInfo]] = {}
        self._pools: dict[str, dict[str, PoolInfo]] = {}
        self._networks: dict[str, dict[str, NetworkInfo]] = {}
        # (host, uuid) -> status the agent client reported for the project's channel.
        self._agent_override: dict[tuple[str, str], str] = {}

    # ---- reads -------------------------------------------------------------------------

    def hosts(self) -> list[str]:
        return sorted(self._domains.keys() | self._pools.keys() | self._networks.keys())

    def domains(self, host: str | None = None) -> list[DomainInfo]:
        hosts = [host] if host is not None else sorted(self._domains)
        out: list[DomainInfo] = []
        for h in hosts:
            out.extend(sorted(self._domains.get(h, {}).values(), key=lambda d: d.name))
        return out

    def domain(self, host: str, name_or_uuid: str) -> DomainInfo:
        by_uuid = self._domains.get(host, {})
        found = by_uuid.get(name_or_uuid.lower())
        if found is None:
            found = next((d for d in by_uuid.values() if d.name == name_or_uuid), None)
        if found is None:
            raise NotFound(f"VM '{name_or_uuid}' not found on host '{host}'", field="vm")
        return found

    def pools(self, host: str | None = None) -> list[PoolInfo]:
        return self._list(self._pools, host)

    def pool(self, host: str, name: str) -> PoolInfo:
        found = self._pools.get(host, {}).get(name)
        if found is None:
            raise NotFound(f"pool '{name}' not found on host '{host}'", field="pool")
        return found

    def networks(self, host: str | None = None) -> list[NetworkInfo]:
        return self._list(self._networks, host)

    def network(self, host: str, name: str) -> NetworkInfo:
        found = self._networks.get(host, {}).get(name)
        if found is None:
            raise NotFound(f"network '{name}' not found on host '{host}'", field="network")
        return found

    @staticmethod
    def _list(table: dict[str, dict[str, Any]], host: str | None) -> list[Any]:
        hosts = [host] if host is not None else sorted(table)
        out: list[Any] = []
        for h in hosts:
            out.extend(v for _, v in sorted(table.get(h, {}).items()))
        return out

    # ---- domain writes -----------------------------------------------------------------

    def put_domain(self, info: DomainInfo) -> DomainInfo:
        """Store a freshly read domain; publish added/updated (+ agent) if anything changed.
        The manager's own helper guests (the accelerator probe's) are not stored: they are
        no user's VM (virt/helper_guests.py)."""
        if is_helper_guest(info.name):
            self.remove_domain(info.host, info.uuid)  # e.g. a VM renamed into the prefix
            return info
        host_table = self._domains.setdefault(info.host, {})
        info = self._apply_override(info)
        old = host_table.get(info.uuid)
        if old is not None and old.same_as(info):
            return old
        host_table[info.uuid] = info
        kind = "domain.added" if old is None else "domain.updated"
        self.bus.publish(Event(kind, host=info.host, subject=info.uuid, data=_summary(info)))
        self._publish_agent_changes(old, info)
        return info

    def remove_domain(self, host: str, uuid: str) -> DomainInfo | None:
        old = self._domains.get(host, {}).pop(uuid, None)
        self._agent_override.pop((host, uuid), None)
        if old is not None:
            self.bus.publish(Event("domain.removed", host=host, subject=uuid, data=_summary(old)))
        return old

    def set_agent_status(self, host: str, uuid: str, status: str) -> DomainInfo:
        """Called by the agent client: 'connecting' while it syncs, 'unresponsive' when the
        guest opened the port but does not answer, 'connected' once it answers."""
        if status not in AGENT_STATUSES:
            raise InvalidInput(
                f"agent status must be one of {', '.join(AGENT_STATUSES)}", field="status"
            )
        current = self._domains.get(host, {}).get(uuid)
        if current is None:
            raise NotFound(f"VM '{uuid}' not found on host '{host}'", field="vm")
        self._agent_override[(host, uuid)] = status
        return self.put_domain(dataclasses.replace(current, agent_status=status))

    def _apply_override(self, info: DomainInfo) -> DomainInfo:
        key = (info.host, info.uuid)
        override = self._agent_override.get(key)
        if override is None:
            return info
        # The client's view only holds while the guest keeps its port open; once libvirt
        # says the port closed (or the VM stopped) the channel is simply absent again.
        if info.agent_status == "absent":
            del self._agent_override[key]
            return info
        return dataclasses.replace(info, agent_status=override)

    def _publish_agent_changes(self, old: DomainInfo | None, new: DomainInfo) -> None:
        before_kvmm = old.agent_status if old else "absent"
        before_qga = old.qga_status if old else "absent"
        for channel, before, after in (
            ("kvmm", before_kvmm, new.agent_status),
            ("qga", before_qga, new.qga_status),
        ):
            if before != after:
                self.bus.publish(
                    Event(
                        "domain.agent",
                        host=new.host,
                        subject=new.uuid,
                        data={"name": new.name, "channel": channel, "status": after},
                    )
                )

    # ---- pools and networks ------------------------------------------------------------

    def put_pool(self, info: PoolInfo) -> PoolInfo:
        return self._put(self._pools, "pool", info)

    def remove_pool(self, host: str, name: str) -> PoolInfo | None:
        return self._remove(self._pools, "pool", host, name)

    def put_network(self, info: NetworkInfo) -> NetworkInfo:
        return self._put(self._networks, "network", info)

    def remove_network(self, host: str, name: str) -> NetworkInfo | None:
        return self._remove(self._networks, "network", host, name)

    def _put(self, table: dict[str, dict[str, _Named]], kind: str, info: _Named) -> _Named:
        host_table = table.setdefault(info.host, {})
        old = host_table.get(info.name)
        if old is not None and old.same_as(info):
            return old
        host_table[info.name] = info
        what = "added" if old is None else "updated"
        self.bus.publish(Event(f"{kind}.{what}", host=info.host, subject=info.name))
        return info

    def _remove(
        self, table: dict[str, dict[str, _Named]], kind: str, host: str, name: str
    ) -> _Named | None:
        old = table.get(host, {}).pop(name, None)
        if old is not None:
            self.bus.publish(Event(f"{kind}.removed", host=host, subject=name))
        return old

    # ---- whole-host operations ---------------------------------------------------------

    def replace_host(
        self,
        host: str,
        domains: Iterable[DomainInfo],
        pools: Iterable[PoolInfo],
        networks: Iterable[NetworkInfo],
    ) -> None:
        """Make the host's inventory equal to a full listing (after connect or reconnect),
        publishing only the differences."""
        domains = list(domains)
        keep = {d.uuid for d in domains}
        for uuid in list(self._domains.get(host, {})):
            if uuid not in keep:
                self.remove_domain(host, uuid)
        self._domains.setdefault(host, {})
        for d in domains:
            self.put_domain(d)
        pool_items, network_items = list(pools), list(networks)
        self._replace_table(self._pools, "pool", host, pool_items)
        self._replace_table(self._networks, "network", host, network_items)

    def _replace_table(
        self, table: dict[str, dict[str, _Named]], kind: str, host: str, items: list[_Named]
    ) -> None:
        names = {i.name for i in items}
        for name in list(table.get(host, {})):
            if name not in names:
                self._remove(table, kind, host, name)
        table.setdefault(host, {})
        for i in items:
            self._put(table, kind, i)

    def clear_host(self, host: str) -> None:
        """Forget a host entirely (it was removed from the manager)."""
        self.replace_host(host, [], [], [])
        self._domains.pop(host, None)
        self._pools.pop(host, None)
        self._networks.pop(host, None)
