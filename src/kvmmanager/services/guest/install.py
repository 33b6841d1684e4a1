"""One step to get the agent into a VM: `install_agent(host, vm)`.

1. The current agent ISO is deployed on the VM's host (IsoService.deploy: a no-op when
   it already is).
2. The VM gets the `org.kvmmanager.agent.0` channel: added to the persistent definition,
   and hot-plugged into a running VM when QEMU allows it (else: at the next boot).
3. The ISO goes into the VM's empty CD-ROM (the VM service's insert_media); a VM without
   an empty CD-ROM drive gets one (a disc already in a drive, such as the install ISO,
   is replaced only when asked: `replace_cd`). IDE/SATA drives cannot be hot-plugged:
   then the drive and the disc appear after a power cycle, and the answer says so.
4. The answer carries the exact commands to type in the guest.

With `agent.eject_after_install`, the ISO is ejected by itself once the agent connects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import libvirt

from kvmmanager.core.config import AgentSettings
from kvmmanager.core.errors import Conflict, KvmmError
from kvmmanager.iso import CHANNEL_NAME
from kvmmanager.iso.volume_names import volume_version
from kvmmanager.services.guest.deployed import DeployResult
from kvmmanager.services.vms.builder import cdrom_bus, disk_target, lookup
from kvmmanager.services.vms.service import VmService
from kvmmanager.virt.errors import libvirt_message
from kvmmanager.virt.events import EventBus
from kvmmanager.virt.registry import HostRegistry
from kvmmanager.virt.xml.devices import Channel, Disk
from kvmmanager.virt.xml.domain import Domain

# Puts the current agent ISO into a host's pool (IsoService.deploy, which builds on this
# module): (host, pool or None for the configured one) -> what it did.
DeployIso = Callable[[str, str | None], Awaitable[DeployResult]]

log = logging.getLogger(__name__)

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
MOUNT_POINT = "/mnt/kvmm"
TRAY_RETRIES = 5
TRAY_RETRY_SECONDS = 0.5
# How long an install waits for the agent to connect before it stops watching to eject.
EJECT_WATCH_SECONDS = 3600.0


@dataclass(slots=True)
class InstallResult:
    host: str
    vm: str
    running: bool
    volume: str
    iso_path: str
    channel: str  # present | added
    channel_live: bool  # the running guest has the port now
    cdrom: str  # target dev, e.g. hdc
    cdrom_added: bool
    restart_needed: bool
    messages: list[str] = field(default_factory=list)
    guest_commands: list[str] = field(default_factory=list)
    deploy: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def guest_commands(cdrom_index: int) -> list[str]:
    """What to type in a Linux guest, as root, to install from the CD."""
    return [
        f"mkdir -p {MOUNT_POINT}",
        f"mount -r /dev/sr{cdrom_index} {MOUNT_POINT}",
        f"sh {MOUNT_POINT}/install.sh",
        f"umount {MOUNT_POINT}",
    ]


def _channel_xml() -> str:
    return Channel(type="unix", target_type="virtio", target_name=CHANNEL_NAME).to_xml()


def ensure_channel(dom: libvirt.virDomain) -> tuple[str, bool, list[str]]:
    """(present|added, live now?, messages) for the agent channel of `dom` (blocking)."""
    running, persistent = bool(dom.isActive()), bool(dom.isPersistent())
    msgs: list[str] = []
    state = "present"
    if persistent:
        config = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        if config.devices.channel(CHANNEL_NAME) is None:
            dom.attachDeviceFlags(_channel_xml(), CONFIG)
            state = "added"
            msgs.append(f"added the {CHANNEL_NAME} channel to the VM's definition")
    if not running:
        return state, False, msgs
    live = Domain.from_xml(dom.XMLDesc(0))
    if live.devices.channel(CHANNEL_NAME) is not None:
        return state, True, msgs
    try:
        dom.attachDeviceFlags(_channel_xml(), LIVE)
    except libvirt.libvirtError as exc:
        if not persistent:
            raise Conflict(
                f"cannot hot-plug the agent channel into transient VM '{dom.name()}': "
                f"{libvirt_message(exc)}",
                field="vm",
            ) from exc
        msgs.append(
            f"QEMU could not hot-plug the channel ({libvirt_message(exc)}): it appears "
            "after the next power off and start"
        )
        return "added", False, msgs
    msgs.append("hot-plugged the channel into the running VM")
    return "added", True, msgs


def _used_targets(*xmls: Domain) -> set[str]:
    return {d.target_dev for x in xmls for d in x.devices.disks if d.target_dev}


def ensure_cdrom(
    dom: libvirt.virDomain, path: str, *, replace_cd: bool = False
) -> tuple[str, int, bool, bool, list[str]]:
    """(target, index among CD-ROMs, added?, restart needed?, messages); an existing drive
    is returned as is (the caller inserts the disc), a new one is added with the disc.

    A drive holding another disc (the install ISO) is never emptied unasked: a drive is
    added beside it, and only with `replace_cd` is its disc swapped for the agent's."""
    running, persistent = bool(dom.isActive()), bool(dom.isPersistent())
    live = Domain.from_xml(dom.XMLDesc(0))
    config = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) if persistent else live
    current = live if running else config
    drives = current.devices.cdroms()
    # Prefer the drive that already holds an agent ISO, else the first empty one.
    for i, d in enumerate(drives):
        if d.source_path and volume_version(d.source_path.rsplit("/", 1)[-1]):
            return d.target_dev or "", i, False, False, []
    for i, d in enumerate(drives):
        if not d.has_media:
            return d.target_dev or "", i, False, False, []
    if drives and replace_cd:
        held = drives[0].source_path or "a disc"
        return drives[0].target_dev or "", 0, False, False, [f"replaced {held} (replace_cd)"]
    index = len(drives)
    busy = ", ".join(f"{d.target_dev} holds {d.source_path or 'a disc'}" for d in drives)
    keep = f"kept the VM's CD-ROM media ({busy}); " if drives else ""
    bus = cdrom_bus(config.os.machine)
    used = _used_targets(live, config)
    names = [disk_target(bus, i) for i in range(26 * 27)]
    # After the VM's own CD-ROM drives (hdd beside the install CD on hdc, not hda): the
    # guest numbers its drives /dev/srN in bus order, which guest_commands(index) relies
    # on, and old VMs with <boot dev='cdrom'/> boot the FIRST drive only.
    last = max((names.index(d.target_dev) for d in drives if d.target_dev in names), default=-1)
    free = [t for t in names if t not in used]
    target = next((t for t in free if names.index(t) > last), free[0])
    disk = Disk(type="file", device="cdrom", driver_name="qemu", driver_type="raw")
    disk.source_file, disk.target_dev, disk.target_bus, disk.readonly = path, target, bus, True
    msgs = []
    restart = False
    if running:
        try:
            dom.attachDeviceFlags(disk.to_xml(), LIVE | (CONFIG if persistent else 0))
            msgs.append(f"{keep}hot-plugged a CD-ROM drive {target} with the agent ISO")
            return target, index, True, False, msgs
        except libvirt.libvirtError as exc:
            if not persistent:
                what = "its CD-ROM drives hold other media" if drives else "it has no CD-ROM"
                raise Conflict(
                    f"transient VM '{dom.name()}': {what} and QEMU cannot add a drive while "
                    f"it runs ({libvirt_message(exc)})"
                    + ("; replace_cd=true swaps the disc for the agent ISO" if drives else ""),
                    field="vm",
                ) from exc
            restart = True
            msgs.append(
                f"{keep}added a CD-ROM drive {target} ({bus}) holding the agent ISO to the "
                "definition; QEMU cannot hot-plug it: power the VM off and start it again"
                + (
                    " (or install again with replace_cd=true to swap the disc now)"
                    if drives
                    else ""
                )
            )
    else:
        msgs.append(f"{keep}added a CD-ROM drive {target} ({bus}) holding the agent ISO")
    try:
        dom.attachDeviceFlags(disk.to_xml(), CONFIG)
    except libvirt.libvirtError as exc:
        if not drives:
            raise
        raise Conflict(
            f"VM '{dom.name()}' has no room for another CD-ROM drive on its {bus} bus "
            f"({libvirt_message(exc)}) and its drives hold other media ({busy}); "
            "replace_cd=true swaps that disc for the agent ISO",
            field="replace_cd",
        ) from exc
    return target, index, True, restart, msgs


class AgentInstallService:
    def __init__(
        self,
        agent: AgentSettings,
        bus: EventBus,
        registry: HostRegistry,
        vms: VmService,
        deploy: DeployIso,
    ) -> None:
        self._agent = agent
        self._bus = bus
        self._registry = registry
        self._vms = vms
        self._deploy = deploy
        self._watchers: set[asyncio.Task[None]] = set()

    async def install(
        self, host: str, vm: str, *, pool: str | None = None, replace_cd: bool = False
    ) -> InstallResult:
        deployed = await self._deploy(host, pool)
        hc = self._registry.get(host)

        def prepare(conn: libvirt.virConnect) -> dict[str, Any]:
            dom = lookup(conn, host, vm)
            # The CD-ROM first: a refusal there (no room for a drive beside the VM's
            # own disc) leaves the VM as it was.
            target, index, added, restart, cd_msgs = ensure_cdrom(
                dom, deployed.path, replace_cd=replace_cd
            )
            channel, channel_live, msgs = ensure_channel(dom)
            return {
                "name": dom.name(),
                "uuid": dom.UUIDString(),
                "running": bool(dom.isActive()),
                "channel": channel,
                "channel_live": channel_live,
                "target": target,
                "index": index,
                "added": added,
                "restart": restart,
                "messages": msgs + cd_msgs,
            }

        facts = await hc.run(lambda: prepare(hc.conn), vm=vm)
        msgs = facts["messages"]
        if not facts["added"]:
            media = await self._insert(host, vm, deployed.pool, deployed.volume, facts["target"])
            msgs.append(media["message"])
        restart = facts["restart"]
        if facts["running"] and not facts["channel_live"]:
            restart = True
        result = InstallResult(
            host=host,
            vm=facts["name"],
            running=facts["running"],
            volume=deployed.volume,
            iso_path=deployed.path,
            channel=facts["channel"],
            channel_live=facts["channel_live"],
            cdrom=facts["target"],
            cdrom_added=facts["added"],
            restart_needed=restart,
            messages=msgs,
            guest_commands=guest_commands(facts["index"]),
            deploy=deployed.to_dict(),
        )
        if not facts["running"]:
            result.messages.append("start the VM, then type the guest commands as root")
        elif restart:
            result.messages.append("after the power cycle, type the guest commands as root")
        if self._agent.eject_after_install:
            self._watch_and_eject(host, facts["uuid"], facts["target"])
        return result

    async def _insert(
        self, host: str, vm: str, pool: str, volume: str, target: str
    ) -> dict[str, Any]:
        # While a guest's firmware is still probing its CD-ROM, QEMU may refuse the media
        # change ("Tray of device ... is not open"); it succeeds moments later.
        for attempt in range(TRAY_RETRIES):
            try:
                return await self._vms.edit.insert_media(host, vm, pool, volume, target)
            except KvmmError as exc:
                if "Tray of device" not in exc.message or attempt == TRAY_RETRIES - 1:
                    raise
                await asyncio.sleep(TRAY_RETRY_SECONDS)
        raise AssertionError("unreachable")

    async def eject(self, host: str, vm: str) -> dict[str, Any]:
        """Eject the agent ISO from whichever CD-ROM drive holds it."""
        hc = self._registry.get(host)

        def find(conn: libvirt.virConnect) -> str | None:
            dom = lookup(conn, host, vm)
            flags = 0 if dom.isActive() else libvirt.VIR_DOMAIN_XML_INACTIVE
            for d in Domain.from_xml(dom.XMLDesc(flags)).devices.cdroms():
                if d.source_path and volume_version(d.source_path.rsplit("/", 1)[-1]):
                    dev: str | None = d.target_dev
                    return dev
            return None

        target = await hc.run(lambda: find(hc.conn), kind="read", op="find agent ISO drive", vm=vm)
        if target is None:
            raise Conflict(f"vm '{vm}' has no agent ISO in a CD-ROM drive", field="vm")
        return await self._vms.edit.eject_media(host, vm, target)

    async def aclose(self) -> None:
        """Stop waiting to eject (manager shutdown)."""
        tasks = list(self._watchers)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _watch_and_eject(self, host: str, uuid: str, target: str) -> None:
        def wanted(ev: Any) -> bool:
            return bool(
                ev.kind == "domain.agent"
                and ev.host == host
                and ev.subject == uuid
                and ev.data.get("channel") == "kvmm"
                and ev.data.get("status") == "connected"
            )

        # Subscribed before returning, so a connect right after the install is not missed.
        sub = self._bus.subscribe(maxsize=100, predicate=wanted)
        task = asyncio.create_task(self._eject_when_connected(sub, wanted, host, uuid, target))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _eject_when_connected(
        self, sub: Any, wanted: Any, host: str, uuid: str, target: str
    ) -> None:
        with sub:
            try:
                async with asyncio.timeout(EJECT_WATCH_SECONDS):
                    while not wanted(await sub.get()):  # a resync notice: keep waiting
                        pass
            except TimeoutError:
                return
        try:
            await self._vms.edit.eject_media(host, uuid, target)
        except KvmmError as exc:
            log.warning("could not eject the agent ISO from %s on %s: %s", uuid, host, exc)
        else:
            log.info("ejected the agent ISO from %s on %s: the agent connected", uuid, host)
