"""LibvirtStreamTransport against the real libvirtd: a firmware-only TCG domain (no guest
OS, so nobody opens the port) still has the channel; the stream opens, a write does not
hang, sync fails cleanly as unresponsive, and close aborts the stream. Real guests are the
VM suite's."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest
from lxml import etree

from kvmmanager.agent.client import AgentClient
from kvmmanager.agent.transports import LibvirtStreamTransport
from kvmmanager.core.errors import AgentUnavailable
from kvmmanager.virt.xml.devices import KVMM_AGENT_CHANNEL
from kvmmanager.virt.xml.domain import Domain

pytestmark = pytest.mark.libvirtd

DOMAIN_XML = """
<domain type='qemu'>
  <name>placeholder</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <channel type='unix'><target type='virtio' name='org.kvmmanager.agent.0'/></channel>
  </devices>
</domain>
"""


class FakeHost:
    """The slice of HostConnection the transport uses (conn + run)."""

    def __init__(self, conn: libvirt.virConnect) -> None:
        self.conn = conn

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)


@pytest.fixture
def domain() -> Iterator[tuple[libvirt.virConnect, libvirt.virDomain]]:
    conn = libvirt.open("qemu:///system")
    root = etree.fromstring(DOMAIN_XML)
    root.find("name").text = f"kvmm-t-agent-chan-{uuid.uuid4().hex[:8]}"
    dom = conn.createXML(etree.tostring(root).decode(), 0)
    try:
        yield conn, dom
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        conn.close()


async def test_stream_transport_open_write_close(domain: Any) -> None:
    conn, dom = domain
    live = Domain.from_xml(dom.XMLDesc(0))
    channel = live.devices.channel(KVMM_AGENT_CHANNEL)
    assert channel is not None and channel.source_path  # libvirt picked the socket path
    assert channel.connected is False  # no guest process opened the port
    host = FakeHost(conn)
    statuses: list[str] = []
    client = AgentClient(
        lambda: LibvirtStreamTransport.open(host, dom.UUIDString(), KVMM_AGENT_CHANNEL),
        timeouts={"short": 1.0},
        on_status=statuses.append,
    )
    try:
        async with asyncio.timeout(60):
            with pytest.raises(AgentUnavailable):
                await client.call("ping")
    finally:
        await client.close()
    assert statuses[:3] == ["connecting", "unresponsive", "disconnected"]
