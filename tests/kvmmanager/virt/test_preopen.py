"""Host connections opened ahead by `serve` while the web app is built (issue 19 item 4).

The test driver gives every open of a node file its own fresh copy of the objects, so a
domain defined on the connection opened ahead shows whose connection a host runs on.
"""

from __future__ import annotations

import threading

import libvirt

from kvmmanager.virt import session
from kvmmanager.virt.preopen import AheadOpens
from kvmmanager.virt.registry import HostRegistry
from kvmmanager.virt.xml.domain import Domain

MARKER = "kvmm-t-ahead-marker"


def _marked_open(uri: str) -> libvirt.virConnect:
    """The real open, plus a domain only this connection has."""
    conn = session.open_uri(uri)
    model = Domain.from_xml(conn.listAllDomains(0)[0].XMLDesc(0))
    model.name, model.uuid = MARKER, "11111111-2222-3333-4444-0000000000ee"
    conn.defineXML(model.to_xml())
    return conn


def _names(inventory, host: str) -> set[str]:
    return {d.name for d in inventory.domains(host)}


async def test_a_host_starts_on_the_connection_opened_ahead_for_it(
    libvirt_settings, bus, inventory, testnode_uri
):
    ahead = AheadOpens(_marked_open)
    ahead.start([testnode_uri])
    registry = HostRegistry(libvirt_settings, bus, inventory, ahead)
    try:
        host = await registry.add("kvmm-t-host-ahead", testnode_uri)
        await host.wait_connected(30)
        assert MARKER in _names(inventory, "kvmm-t-host-ahead")
        # Taken once: a reconnect (or another host on the URI) opens its own.
        assert ahead.take(testnode_uri) is None
    finally:
        await registry.close()


async def test_a_failed_ahead_open_is_the_hosts_first_failure_then_it_opens_its_own(
    libvirt_settings, bus, inventory, testnode_uri
):
    def missing(uri: str) -> libvirt.virConnect:
        return session.open_uri(uri + ".kvmm-t-missing")  # libvirt refuses: no such file

    ahead = AheadOpens(missing)
    ahead.start([testnode_uri])
    registry = HostRegistry(libvirt_settings, bus, inventory, ahead)
    seen: list[tuple[str, str]] = []
    bus.add_listener(
        lambda ev: (
            seen.append((ev.data["status"], ev.data.get("reason", "")))
            if ev.kind == "host.status"
            else None
        )
    )
    try:
        host = await registry.add("kvmm-t-host-ahead", testnode_uri)
        await host.wait_connected(30)
        failed = [reason for status, reason in seen if status == "failed"]
        assert failed and "kvmm-t-missing" in failed[0]
        assert "kvmm-t-host-web" in _names(inventory, "kvmm-t-host-ahead")
    finally:
        await registry.close()


def test_a_connection_no_host_takes_is_closed(testnode_uri):
    opened: list[libvirt.virConnect] = []
    done = threading.Event()

    def tracked(uri: str) -> libvirt.virConnect:
        conn = session.open_uri(uri)
        opened.append(conn)
        done.set()
        return conn

    ahead = AheadOpens(tracked)
    ahead.start([testnode_uri])
    assert done.wait(30)
    ahead.discard_except([])  # the host was removed before the Manager started
    assert ahead.take(testnode_uri) is None
    # Closed now or by the opening thread as it ends: bounded wait, no timing asserted.
    for _ in range(3000):
        try:
            opened[0].isAlive()
        except libvirt.libvirtError:
            break
        threading.Event().wait(0.01)
    else:
        raise AssertionError("the connection nobody took is still open")
