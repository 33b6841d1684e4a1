"""Read one libvirt object into its inventory record, and turn libvirt callbacks into events.

Everything here runs in a host's worker thread (blocking libvirt calls); the XML is read
through the typed models of `kvmmanager.virt.xml`, never parsed by hand.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import libvirt

from kvmmanager.core.errors import KvmmError
from kvmmanager.virt.inventory import (
    ChannelInfo,
    DiskInfo,
    DomainInfo,
    GraphicsInfo,
    NetworkInfo,
    NicInfo,
    OsInfo,
    PoolInfo,
)
from kvmmanager.virt.xml.devices import KVMM_AGENT_CHANNEL, QEMU_GA_CHANNEL
from kvmmanager.virt.xml.domain import Domain

log = logging.getLogger(__name__)

DOMAIN_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}
# Reason codes per state, in libvirt's enum order (virDomain<State>Reason).
_STATE_REASONS: dict[int, tuple[str, ...]] = {
    libvirt.VIR_DOMAIN_RUNNING: (
        "unknown",
        "booted",
        "migrated",
        "restored",
        "from_snapshot",
        "unpaused",
        "migration_canceled",
        "save_canceled",
        "wakeup",
        "crashed",
        "postcopy",
        "postcopy_failed",
    ),
    libvirt.VIR_DOMAIN_PAUSED: (
        "unknown",
        "user",
        "migration",
        "save",
        "dump",
        "ioerror",
        "watchdog",
        "from_snapshot",
        "shutting_down",
        "snapshot",
        "crashed",
        "starting_up",
        "postcopy",
        "postcopy_failed",
        "api_error",
    ),
    libvirt.VIR_DOMAIN_SHUTDOWN: ("unknown", "user"),
    libvirt.VIR_DOMAIN_SHUTOFF: (
        "unknown",
        "shutdown",
        "destroyed",
        "crashed",
        "migrated",
        "saved",
        "failed",
        "from_snapshot",
        "daemon",
    ),
    libvirt.VIR_DOMAIN_CRASHED: ("unknown", "panicked"),
}
# virDomainEventType and its per-type detail enums.
LIFECYCLE_EVENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("defined", ("added", "updated", "renamed", "from_snapshot")),
    ("undefined", ("removed", "renamed")),
    ("started", ("booted", "migrated", "restored", "from_snapshot", "wakeup")),
    (
        "suspended",
        (
            "paused",
            "migrated",
            "ioerror",
            "watchdog",
            "restored",
            "from_snapshot",
            "api_error",
            "postcopy",
            "postcopy_failed",
        ),
    ),
    ("resumed", ("unpaused", "migrated", "from_snapshot", "postcopy", "postcopy_failed")),
    (
        "stopped",
        (
            "shutdown",
            "destroyed",
            "crashed",
            "migrated",
            "saved",
            "failed",
            "from_snapshot",
        ),
    ),
    ("shutdown", ("finished", "guest", "host")),
    ("pmsuspended", ("memory", "disk")),
    ("crashed", ("panicked", "crashloaded")),
)
POOL_EVENTS = ("defined", "undefined", "started", "stopped", "created", "deleted")
NETWORK_EVENTS = ("defined", "undefined", "started", "stopped")
POOL_STATES = ("inactive", "building", "running", "degraded", "inaccessible")


def _name(table: tuple[str, ...], index: int) -> str:
    return table[index] if 0 <= index < len(table) else f"unknown-{index}"


def state_name(state: int) -> str:
    return DOMAIN_STATES.get(state, f"unknown-{state}")


def reason_name(state: int, reason: int) -> str:
    return _name(_STATE_REASONS.get(state, ("unknown",)), reason)


def lifecycle_names(event: int, detail: int) -> tuple[str, str]:
    if 0 <= event < len(LIFECYCLE_EVENTS):
        name, details = LIFECYCLE_EVENTS[event]
        return name, _name(details, detail)
    return f"unknown-{event}", str(detail)


# ---- objects ---------------------------------------------------------------------------


def _agent_status(model: Domain, name: str) -> str:
    channel = model.devices.channel(name)
    if channel is None:
        return "absent"
    connected = channel.connected
    if name == QEMU_GA_CHANNEL:
        return "connected" if connected else "disconnected"
    # Our own channel: "connected" = the guest opened the port. Whether the agent really
    # answers is the agent client's to say (Inventory.set_agent_status).
    return "connected" if connected else "absent"


def domain_from_xml(host: str, xml: str, **live: Any) -> DomainInfo:
    """Build a DomainInfo from domain XML plus the live facts XML does not carry."""
    model = Domain.from_xml(xml)
    meta = model.manager_metadata
    devs = model.devices
    os_model = model.os
    disks = tuple(
        DiskInfo(
            target=d.target_dev or "",
            device=d.device or "disk",
            source=d.source_path,
            pool=d.source_pool,
            volume=d.source_volume,
            format=d.driver_type,
            bus=d.target_bus,
            readonly=bool(d.readonly),
        )
        for d in devs.disks
    )
    nics = tuple(
        NicInfo(mac=n.mac_address, type=n.type or "", source=n.source, model=n.model)
        for n in devs.interfaces
    )
    graphics = tuple(
        GraphicsInfo(type=g.type or "", port=g.port, listen=g.listen_address) for g in devs.graphics
    )
    channels = tuple(
        ChannelInfo(name=c.target_name or "", type=c.type or "", state=c.target_state)
        for c in devs.channels
    )
    return DomainInfo(
        host=host,
        name=model.name or "",
        uuid=(model.uuid or "").lower(),
        vcpus=model.online_vcpus or 0,
        max_vcpus=model.vcpus or 0,
        memory_kib=model.current_memory or model.memory or 0,
        max_memory_kib=model.memory or 0,
        title=model.title or "",
        description=model.description or "",
        tags=tuple(meta.tags) if meta is not None else (),
        owner=meta.owner if meta is not None else None,
        os=OsInfo(
            type=os_model.os_type or "",
            arch=os_model.arch or "",
            machine=os_model.machine or "",
            firmware="uefi" if os_model.is_uefi else "bios",
            osinfo_id=model.os_info.os_id or "",
        ),
        graphics=graphics,
        disks=disks,
        nics=nics,
        channels=channels,
        agent_status=_agent_status(model, KVMM_AGENT_CHANNEL),
        qga_status=_agent_status(model, QEMU_GA_CHANNEL),
        **live,
    )


@dataclass(frozen=True)
class LiveFacts:
    """What libvirt's API tells of a domain besides its XML.

    `counters` = (max memory KiB, memory KiB, vCPUs) of a running or paused domain (hot-
    plugged vCPUs and the balloon show only there); None when not read (yet)."""

    state: int
    reason: int
    persistent: bool
    autostart: bool
    counters: tuple[int, int, int] | None = None

    @property
    def active(self) -> bool:
        return self.state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED)


def live_facts(dom: libvirt.virDomain) -> LiveFacts:
    """One domain's facts, one call each (an event's re-read, or no bulk stats)."""
    state, reason = dom.state()
    persistent = bool(dom.isPersistent())
    return LiveFacts(
        state=state,
        reason=reason,
        persistent=persistent,
        autostart=bool(dom.autostart()) if persistent else False,
    )


def read_domain(
    host: str, dom: libvirt.virDomain, port: tuple[str, bool] | None = None
) -> DomainInfo:
    """Re-read one domain (worker thread). Raises libvirtError NO_DOMAIN when it is gone.

    `port` = (device alias, open) from a VSERPORT_CHANGE just received: QEMU's word on
    that port wins over the XML's channel state, which libvirt updates in a worker of its
    own, often AFTER this re-read (then an agent restarted within a second would stay
    "absent": no later event corrects it)."""
    return domain_info(host, dom, live_facts(dom), port)


def domain_info(
    host: str, dom: libvirt.virDomain, facts: LiveFacts, port: tuple[str, bool] | None = None
) -> DomainInfo:
    """A domain's record from its XML (one call) and `facts` (read before, per domain or
    in bulk); the counters are read here when `facts` lacks them."""
    dom_id = dom.ID()  # kept by the domain object: no call to libvirtd
    live: dict[str, Any] = {
        "id": dom_id if dom_id >= 0 else None,
        "state": state_name(facts.state),
        "state_reason": reason_name(facts.state, facts.reason),
        "persistent": facts.persistent,
        "autostart": facts.autostart,
    }
    xml = dom.XMLDesc(0)
    counted = facts.active
    try:
        info = domain_from_xml(host, xml, **live)
    except KvmmError as exc:
        # One odd domain (hand-written XML, a driver we do not model) must not keep the
        # host out of the inventory: list it with what the API alone tells.
        log.warning("host %s: domain %s: %s; listed with basic facts only", host, dom.name(), exc)
        info = DomainInfo(host=host, name=dom.name(), uuid=dom.UUIDString().lower(), **live)
        counted = True  # take memory and vCPUs from the counters below
    if port is not None:
        info = _with_port_state(info, xml, *port)
    if counted:
        # Hot-plugged vCPUs/balloon are only reflected by the live counters.
        if facts.counters is not None:
            max_mem, mem, vcpus = facts.counters
        else:
            _, max_mem, mem, vcpus, _ = dom.info()
        info = dataclasses.replace(info, memory_kib=mem, max_memory_kib=max_mem, vcpus=vcpus)
    return info


def _with_port_state(info: DomainInfo, xml: str, alias: str, is_open: bool) -> DomainInfo:
    try:
        model = Domain.from_xml(xml)
    except Exception:  # the caller already listed it with basic facts
        return info
    channel = model.devices.channel(KVMM_AGENT_CHANNEL)
    if channel is not None and channel.alias == alias:
        return dataclasses.replace(info, agent_status="connected" if is_open else "absent")
    channel = model.devices.channel(QEMU_GA_CHANNEL)
    if channel is not None and channel.alias == alias:
        return dataclasses.replace(info, qga_status="connected" if is_open else "disconnected")
    return info


def vserport_details(details: Any) -> tuple[str, bool] | None:
    """(alias, open) of a VSERPORT_CHANGE's data (a dict, or its JSON text)."""
    if isinstance(details, str):
        try:
            details = json.loads(details)
        except ValueError:
            return None
    if not isinstance(details, dict):
        return None
    alias, is_open = details.get("id"), details.get("open")
    if not isinstance(alias, str) or not isinstance(is_open, bool):
        return None
    return alias, is_open


def read_pool(host: str, pool: libvirt.virStoragePool) -> PoolInfo:
    state, capacity, allocation, available = pool.info()
    return PoolInfo(
        host=host,
        name=pool.name(),
        uuid=pool.UUIDString(),
        state=_name(POOL_STATES, state),
        persistent=bool(pool.isPersistent()),
        autostart=bool(pool.autostart()),
        capacity=capacity,
        allocation=allocation,
        available=available,
        **_pool_xml_facts(pool),
    )


def _pool_xml_facts(pool: libvirt.virStoragePool) -> dict[str, Any]:
    try:
        from kvmmanager.virt.xml.pool import Pool  # written by the XML engineer
    except ImportError:
        return {}
    model = Pool.from_xml(pool.XMLDesc(0))
    return {"type": model.type or "", "path": model.target_path}


def read_network(host: str, net: libvirt.virNetwork) -> NetworkInfo:
    try:
        bridge: str | None = net.bridgeName()
    except libvirt.libvirtError:
        bridge = None  # networks without a bridge (e.g. macvtap passthrough)
    return NetworkInfo(
        host=host,
        name=net.name(),
        uuid=net.UUIDString(),
        active=bool(net.isActive()),
        persistent=bool(net.isPersistent()),
        autostart=bool(net.autostart()),
        bridge=bridge,
        **_network_xml_facts(net),
    )


def _network_xml_facts(net: libvirt.virNetwork) -> dict[str, Any]:
    try:
        from kvmmanager.virt.xml.network import Network  # written by the XML engineer
    except ImportError:
        return {}
    model = Network.from_xml(net.XMLDesc(0))
    return {"forward_mode": model.forward_mode}


@dataclass
class HostSnapshot:
    domains: list[DomainInfo] = field(default_factory=list)
    pools: list[PoolInfo] = field(default_factory=list)
    networks: list[NetworkInfo] = field(default_factory=list)


def _gone(exc: libvirt.libvirtError) -> bool:
    return exc.get_error_code() in (
        libvirt.VIR_ERR_NO_DOMAIN,
        libvirt.VIR_ERR_NO_STORAGE_POOL,
        libvirt.VIR_ERR_NO_NETWORK,
    )


# State, balloon and vCPU counts of every domain in one call. NOWAIT: a domain busy in a
# long job (migration, a hung monitor) is reported from its definition without waiting.
BULK_STATS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
)
BULK_LIST = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT


def bulk_live_facts(conn: libvirt.virConnect) -> dict[str, LiveFacts] | None:
    """Every domain's live facts by UUID from three calls, whatever the number of domains
    (`getAllDomainStats` and two filtered `listAllDomains`), instead of four or five per
    domain: over a remote connection each call is a round trip. None when the driver has
    no bulk stats (the caller reads domain by domain)."""
    try:
        records = conn.getAllDomainStats(BULK_STATS, BULK_LIST)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
            return None
        raise
    persistent = {
        d.UUIDString() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT)
    }
    autostart = {
        d.UUIDString() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART)
    }
    out: dict[str, LiveFacts] = {}
    for dom, stats in records:
        if "state.state" not in stats:
            continue  # read on its own
        uuid = dom.UUIDString()
        out[uuid] = LiveFacts(
            state=stats["state.state"],
            reason=stats.get("state.reason", 0),
            persistent=uuid in persistent,
            autostart=uuid in autostart,
            counters=_counters(stats),
        )
    return out


def _counters(stats: dict[str, Any]) -> tuple[int, int, int] | None:
    try:
        return (stats["balloon.maximum"], stats["balloon.current"], stats["vcpu.current"])
    except KeyError:  # not reported by this driver (the test driver): dom.info() then
        return None


def read_all(host: str, conn: libvirt.virConnect) -> HostSnapshot:
    """Full listing for a resync. An object vanishing between list and read is skipped.

    Domains: the live facts in bulk, then one `XMLDesc` per domain (libvirt has no bulk
    XML call); a domain the bulk facts miss (defined in between) is read on its own."""
    domains = conn.listAllDomains(0)
    bulk = bulk_live_facts(conn) or {}

    def read(host: str, dom: libvirt.virDomain) -> DomainInfo:
        facts = bulk.get(dom.UUIDString())
        return domain_info(host, dom, facts) if facts is not None else read_domain(host, dom)

    pools = conn.listAllStoragePools(0)
    networks = conn.listAllNetworks(0)
    return HostSnapshot(
        domains=_read_present(host, domains, read),
        pools=_read_present(host, pools, read_pool),
        networks=_read_present(host, networks, read_network),
    )


_Info = TypeVar("_Info", DomainInfo, PoolInfo, NetworkInfo)


def _read_present(
    host: str, objects: list[Any], reader: Callable[[str, Any], _Info]
) -> list[_Info]:
    out: list[_Info] = []
    for obj in objects:
        try:
            out.append(reader(host, obj))
        except libvirt.libvirtError as exc:
            if not _gone(exc):
                raise
    return out


# ---- callbacks -------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectEvent:
    """What to publish after the re-read: kind None = just refresh the inventory."""

    kind: str | None
    data: dict[str, Any] = field(default_factory=dict)


DomainEventSink = Callable[[libvirt.virDomain, ObjectEvent], None]
NamedEventSink = Callable[[Any, ObjectEvent], None]
Handler = Callable[..., None]


def domain_event_handlers(sink: DomainEventSink) -> list[tuple[int, Handler]]:
    """(event id, libvirt callback) pairs; each callback forwards to `sink`."""

    def lifecycle(_c: Any, dom: Any, event: int, detail: int, _o: Any) -> None:
        name, detail_name = lifecycle_names(event, detail)
        sink(dom, ObjectEvent("domain.lifecycle", {"event": name, "detail": detail_name}))

    def reboot(_c: Any, dom: Any, _o: Any) -> None:
        sink(dom, ObjectEvent("domain.reboot"))

    def added(_c: Any, dom: Any, alias: str, _o: Any) -> None:
        sink(dom, ObjectEvent("domain.device", {"action": "added", "alias": alias}))

    def removed(_c: Any, dom: Any, alias: str, _o: Any) -> None:
        sink(dom, ObjectEvent("domain.device", {"action": "removed", "alias": alias}))

    def refresh(_c: Any, dom: Any, *_rest: Any) -> None:
        # Agent channel state, metadata, media: the re-read carries the news and the
        # inventory publishes domain.updated / domain.agent for what changed.
        sink(dom, ObjectEvent(None))

    handlers: list[tuple[int, Handler]] = [
        (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle),
        (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, reboot),
        (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED, added),
        (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, removed),
        (libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, refresh),
        (libvirt.VIR_DOMAIN_EVENT_ID_TRAY_CHANGE, refresh),
        (libvirt.VIR_DOMAIN_EVENT_ID_DISK_CHANGE, refresh),
    ]
    metadata_id = getattr(libvirt, "VIR_DOMAIN_EVENT_ID_METADATA_CHANGE", None)
    if metadata_id is not None:
        handlers.append((metadata_id, refresh))
    return handlers


def qemu_monitor_handlers(sink: DomainEventSink) -> list[tuple[str, Handler]]:
    """QEMU monitor events (libvirt_qemu.qemuMonitorEventRegister) worth a re-read."""

    def vserport(_c: Any, dom: Any, _event: str, _s: int, _us: int, details: Any, _o: Any) -> None:
        # A guest opened or closed a virtio-serial port: the re-read publishes
        # domain.agent when it is one of ours, with the port state QEMU reported (libvirt
        # may not have written it into the live XML yet).
        port = vserport_details(details)
        sink(dom, ObjectEvent(None, {"vserport": port} if port is not None else {}))

    return [("VSERPORT_CHANGE", vserport)]


def pool_event_handlers(sink: NamedEventSink) -> list[tuple[int, Handler]]:
    def lifecycle(_c: Any, pool: Any, event: int, detail: int, _o: Any) -> None:
        sink(pool, ObjectEvent("pool.lifecycle", {"event": _name(POOL_EVENTS, event)}))

    def refreshed(_c: Any, pool: Any, _o: Any) -> None:
        sink(pool, ObjectEvent(None))

    return [
        (libvirt.VIR_STORAGE_POOL_EVENT_ID_LIFECYCLE, lifecycle),
        (libvirt.VIR_STORAGE_POOL_EVENT_ID_REFRESH, refreshed),
    ]


def network_event_handlers(sink: NamedEventSink) -> list[tuple[int, Handler]]:
    def lifecycle(_c: Any, net: Any, event: int, detail: int, _o: Any) -> None:
        sink(net, ObjectEvent("network.lifecycle", {"event": _name(NETWORK_EVENTS, event)}))

    return [(libvirt.VIR_NETWORK_EVENT_ID_LIFECYCLE, lifecycle)]
