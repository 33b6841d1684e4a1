"""Blocking helpers around one virConnect: open it without prompts, hook keepalive and
event callbacks in, and take everything out again. Called from threads, never the loop.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import libvirt

from kvmmanager.core.config import LibvirtSettings
from kvmmanager.virt import readers

log = logging.getLogger(__name__)

KEEPALIVE_REASON = "keepalive timeout: the host stopped answering"
CLOSE_REASONS = {
    libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "connection error",
    libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "connection closed by the host (libvirtd gone?)",
    libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: KEEPALIVE_REASON,
    libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed by the client",
}


def prepare_uri(uri: str) -> str:
    """A server has no terminal: make ssh fail instead of waiting for a password prompt."""
    parts = urlsplit(uri)
    if not parts.scheme.endswith("+ssh"):
        return uri
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "no_tty" for k, _ in query):
        return uri
    query.append(("no_tty", "1"))
    return urlunsplit(parts._replace(query=urlencode(query)))


def is_remote_uri(uri: str) -> bool:
    parts = urlsplit(uri)
    return "+" in parts.scheme or bool(parts.netloc)


def _refuse_interactive_auth(_creds: list[Any], _opaque: object) -> int:
    # Credentials come from the transport (ssh keys, TLS certificates, SASL config), never
    # from a prompt: answer "no" so the open fails with libvirt's reason instead of hanging.
    return -1


def open_uri(uri: str) -> libvirt.virConnect:
    uri = prepare_uri(uri)
    if not is_remote_uri(uri):
        return libvirt.open(uri)
    auth = [
        [libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE],
        _refuse_interactive_auth,
        None,
    ]
    return libvirt.openAuth(uri, auth, 0)


@dataclass(frozen=True)
class Sinks:
    """Where the callbacks of one connection go."""

    domain: readers.DomainEventSink
    pool: readers.NamedEventSink
    network: readers.NamedEventSink
    lost: Callable[[str], None]


def attach(conn: libvirt.virConnect, settings: LibvirtSettings, sinks: Sinks) -> None:
    # Keepalive only exists on the remote protocol (also qemu:///system through
    # libvirtd); in-process drivers like test:/// have nothing to keep alive.
    with contextlib.suppress(libvirt.libvirtError):
        conn.setKeepAlive(settings.keepalive_interval, settings.keepalive_count)

    def on_close(_conn: libvirt.virConnect, reason: int, _opaque: object) -> None:
        sinks.lost(CLOSE_REASONS.get(reason, f"connection closed ({reason})"))

    conn.registerCloseCallback(on_close, None)
    ids: list[tuple[str, int]] = []
    # Stored on the connection at once, so teardown() also undoes a half-done attach.
    conn._kvmm_callback_ids = ids
    for event_id, handler in readers.domain_event_handlers(sinks.domain):
        ids.append(("domain", conn.domainEventRegisterAny(None, event_id, handler, None)))
    for event_id, handler in readers.pool_event_handlers(sinks.pool):
        ids.append(("pool", conn.storagePoolEventRegisterAny(None, event_id, handler, None)))
    for event_id, handler in readers.network_event_handlers(sinks.network):
        ids.append(("network", conn.networkEventRegisterAny(None, event_id, handler, None)))
    _attach_qemu_monitor_events(conn, sinks, ids)


def _attach_qemu_monitor_events(
    conn: libvirt.virConnect, sinks: Sinks, ids: list[tuple[str, int]]
) -> None:
    """libvirt has no event for the state of an arbitrary virtio-serial port (only for
    qemu-guest-agent's). QEMU's own VSERPORT_CHANGE, relayed by libvirt, tells when a guest
    opens or closes our agent port, so the inventory follows it without polling."""
    try:
        import libvirt_qemu
    except ImportError:
        return
    if conn.getType() != "QEMU":
        return
    for event, handler in readers.qemu_monitor_handlers(sinks.domain):
        try:
            ids.append(
                ("qemu", libvirt_qemu.qemuMonitorEventRegister(conn, None, event, handler, None, 0))
            )
        except libvirt.libvirtError as exc:
            # A daemon refusing the QEMU-specific API (ACL) only costs promptness.
            log.info("qemu monitor event %s not available: %s", event, exc)


def teardown(conn: libvirt.virConnect) -> None:
    """Deregister everything and close; every step may fail on a dead connection."""

    def qemu_deregister(cb_id: int) -> None:
        import libvirt_qemu

        libvirt_qemu.qemuMonitorEventDeregister(conn, cb_id)

    deregister = {
        "domain": conn.domainEventDeregisterAny,
        "pool": conn.storagePoolEventDeregisterAny,
        "network": conn.networkEventDeregisterAny,
        "qemu": qemu_deregister,
    }
    for kind, cb_id in getattr(conn, "_kvmm_callback_ids", []):
        with contextlib.suppress(libvirt.libvirtError, KeyError):
            deregister[kind](cb_id)
    with contextlib.suppress(libvirt.libvirtError):
        conn.unregisterCloseCallback()
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


def alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False
