"""SPICE displays: switch a VM's graphics between VNC, SPICE or both, and hand out
``.vv`` files for remote-viewer with a one-time password.

    await manager.spice.set_graphics("local", "vm1", vnc=True, spice=True)
    vv = await manager.spice.vv_file("local", "vm1")   # SpiceTicket(filename, content...)

Why VNC stays by default: the browser console (noVNC) speaks VNC only, so SPICE is added
*next to* VNC; removing VNC is an explicit choice (``vnc=False``) and loses the browser
console. Graphics cannot be hot-plugged, so a change is written to the persistent
definition and takes effect at the next boot.

A ``.vv`` download sets a fresh random password on the running VM's SPICE display through
``updateDeviceFlags(AFFECT_LIVE)`` with ``passwdValidTo`` a few minutes ahead
(``spice.ticket_seconds``): the file works once, for a short while, and the password is
never stored or shown anywhere else. The persistent definition is not touched, so a
restarted VM has no valid password at all until the next download.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import libvirt

from kvmmanager.core.config import Settings
from kvmmanager.core.errors import Conflict, InvalidInput, Unsupported
from kvmmanager.services.vms import builder as vm_builder
from kvmmanager.services.vms.edit import redefine
from kvmmanager.services.vms.service import VmService
from kvmmanager.virt.errors import libvirt_message
from kvmmanager.virt.registry import HostRegistry
from kvmmanager.virt.xml.devices import Channel, Graphics, Video
from kvmmanager.virt.xml.domain import Domain

SPICE_CHANNEL = vm_builder.SPICE_CHANNEL
WILDCARDS = ("0.0.0.0", "::", "")
LOOPBACKS = ("127.0.0.1", "::1", "localhost")


@dataclass
class SpiceTicket:
    filename: str
    content: str
    host: str
    port: int
    tls_port: int | None
    expires_at: str


def render_vv(
    *,
    title: str,
    host: str,
    port: int | None,
    tls_port: int | None,
    password: str,
) -> str:
    """The [virt-viewer] file remote-viewer opens (see remote-viewer(1), "CONNECTION FILE")."""
    for name, value in (("title", title), ("host", host), ("password", password)):
        if any(c in value for c in "\r\n\0"):
            raise InvalidInput(f"{name} must be one line", field=name)
    lines = ["[virt-viewer]", "type=spice", f"host={host}"]
    if port and port > 0:
        lines.append(f"port={port}")
    if tls_port and tls_port > 0:
        lines.append(f"tls-port={tls_port}")
    lines += [f"password={password}", "delete-this-file=1", f"title={title}", ""]
    return "\n".join(lines)


def connect_address(
    host: str, uri: str, listen: str | None, configured: dict[str, str], fallback: str
) -> str:
    """The address remote-viewer should dial: the configured one for the host; else a
    specific listen address; else (wildcard) the host part of the libvirt URI, or
    `fallback` (this manager's address) for a local URI. A display bound to loopback on
    a remote host is unreachable: refused, naming the setting to change."""
    if configured.get(host):
        return configured[host]
    uri_host = urlsplit(uri).hostname
    listen = listen or ""
    if listen in LOOPBACKS:
        if uri_host and uri_host not in LOOPBACKS:
            raise Conflict(
                f"the SPICE display listens on {listen} on host '{host}': remote-viewer cannot "
                f"reach it from here. Set spice.listen to 0.0.0.0 for new VMs or spice.addresses"
                f"['{host}'] to an address that forwards to it (an SSH tunnel)",
                field="listen",
            )
        return listen
    if listen not in WILDCARDS:
        return listen
    return uri_host or fallback


def _spice(xml: Domain) -> Graphics | None:
    return next((g for g in xml.devices.graphics if g.type == "spice"), None)


def _vnc(xml: Domain) -> Graphics | None:
    return next((g for g in xml.devices.graphics if g.type == "vnc"), None)


def graphics_blocking(
    dom: libvirt.virDomain,
    vnc: bool,
    spice: bool,
    listen: str,
    vnc_password: str,
    usb_redirection: bool | None = None,
) -> dict[str, Any]:
    """Make the persistent definition have exactly the displays asked for."""
    if not (vnc or spice):
        raise InvalidInput("keep at least one display (vnc or spice)", field="vnc")
    if not dom.isPersistent():
        raise Conflict(f"vm '{dom.name()}' is transient: graphics cannot be changed", field="vm")

    def change(xml: Domain) -> list[str]:
        changes = []
        devs = xml.devices
        has_vnc, has_spice = _vnc(xml), _spice(xml)
        if spice and has_spice is None:
            if not devs.channels_named(SPICE_CHANNEL):
                devs.add(Channel(type="spicevmc", target_type="virtio", target_name=SPICE_CHANNEL))
            devs.add(vm_builder.locked_spice(listen))
            changes.append("added SPICE")
        if not spice and has_spice is not None:
            devs.remove(has_spice)
            for ch in devs.channels_named(SPICE_CHANNEL):
                devs.remove(ch)
            changes.append("removed SPICE")
        if vnc and has_vnc is None:
            devs.add(vm_builder.vnc_display(vnc_password))
            changes.append("added VNC")
        if not vnc and has_vnc is not None:
            devs.remove(has_vnc)
            changes.append("removed VNC (no browser console any more)")
        if spice and changes and "added SPICE" in changes:
            # QXL is SPICE's video device; swap only the default VGA, keep a chosen one.
            for video in devs.videos:
                if video.model_type in (None, "vga", "cirrus"):
                    video.model_type = "qxl"
                    changes.append("video: qxl")
            if not devs.videos:
                devs.add(Video(model_type="qxl"))
        if spice and usb_redirection:
            changes += vm_builder.add_usb_redirection(devs)
        elif not spice or usb_redirection is False:
            changes += vm_builder.remove_usb_redirection(devs)
        return changes

    changes = redefine(dom, change)
    running = bool(dom.isActive())
    what = ", ".join(changes) if changes else "nothing to change"
    # The definition changed either way: a running VM gets it at its next boot, a shut-off
    # one when it starts (it answered next_boot: no for a shut-off VM).
    when = "; takes effect at the next boot" if running else "; takes effect when it starts"
    return {
        "applied_live": False,
        "next_boot": bool(changes),
        "message": what + (when if changes else ""),
        "details": {"vnc": vnc, "spice": spice, "usb_redirection": usb_redirection},
    }


def ticket_blocking(
    dom: libvirt.virDomain, seconds: int, now: datetime | None = None
) -> tuple[Graphics, str, str]:
    """Set a fresh password (valid `seconds`) on the running SPICE display; returns the live
    graphics element, the password and its expiry (UTC, ISO)."""
    if not dom.isActive():
        raise Conflict(f"vm '{dom.name()}' is not running: start it first", field="vm")
    live = Domain.from_xml(dom.XMLDesc(0))
    gfx = _spice(live)
    if gfx is None:
        raise Conflict(
            f"vm '{dom.name()}' has no SPICE display: add one (graphics spice=true) and restart it",
            field="vm",
        )
    password = secrets.token_urlsafe(12)
    expires = (now or datetime.now(UTC)) + timedelta(seconds=seconds)
    valid_to = expires.strftime("%Y-%m-%dT%H:%M:%S")
    update = gfx.copy()
    update.passwd = password
    update.passwd_valid_to = valid_to
    try:
        dom.updateDeviceFlags(update.to_xml(), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError as exc:
        raise Unsupported(
            f"libvirt refused to set the SPICE password of vm '{dom.name()}': "
            f"{libvirt_message(exc)}",
            field="vm",
        ) from exc
    return gfx, password, valid_to + "Z"


class SpiceService:
    def __init__(self, settings: Settings, registry: HostRegistry, vms: VmService) -> None:
        self._settings = settings
        self._registry = registry
        self._vms = vms

    async def set_graphics(
        self, host: str, vm: str, vnc: bool, spice: bool, usb_redirection: bool | None = None
    ) -> dict[str, Any]:
        """`usb_redirection` None keeps what the VM has (and drops it with SPICE)."""
        if usb_redirection and not spice:
            raise InvalidInput(
                "USB redirection goes through a SPICE client: enable spice too",
                field="usb_redirection",
            )
        if spice:
            await self._require_spice(host)
        listen = self._settings.spice.listen
        password = vm_builder.generate_vnc_password()
        return await self._vms.run_on(
            host, vm, graphics_blocking, vnc, spice, listen, password, usb_redirection
        )

    async def _require_spice(self, host: str) -> None:
        from kvmmanager.services.vms.service import host_caps

        domain_type, _ = await self._vms.domain_type(host)
        caps = await self._vms.run(host, host_caps, domain_type, kind="read")
        if caps.graphics is not None and "spice" not in caps.graphics:
            offered = ", ".join(sorted(caps.graphics)) or "none"
            raise Unsupported(
                f"the QEMU of host '{host}' has no SPICE support (its domain capabilities "
                f"offer graphics: {offered})",
                field="spice",
            )

    async def vv_file(self, host: str, vm: str) -> SpiceTicket:
        settings = self._settings
        hc = self._registry.get(host)
        gfx, password, expires = await self._vms.run_on(
            host, vm, ticket_blocking, settings.spice.ticket_seconds
        )
        fallback = urlsplit(settings.server.base_url).hostname or settings.server.host
        address = connect_address(
            host, hc.uri, gfx.listen_address, settings.spice.addresses, fallback
        )
        info = self._vms.get(host, vm)
        port = gfx.port if gfx.port and gfx.port > 0 else None
        tls = gfx.tls_port if gfx.tls_port and gfx.tls_port > 0 else None
        if port is None and tls is None:
            raise Conflict(f"the SPICE display of vm '{info.name}' has no port yet", field="vm")
        content = render_vv(
            title=f"{info.name} ({host}) - KVM Manager",
            host=address,
            port=port,
            tls_port=tls,
            password=password,
        )
        return SpiceTicket(f"{info.name}.vv", content, address, port or 0, tls, expires)
