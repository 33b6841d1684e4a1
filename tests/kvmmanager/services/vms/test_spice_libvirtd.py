"""SPICE on the real libvirtd (qemu:///system): a 64 MiB TCG VM with no OS, created with
SPICE and USB redirection, started; the .vv request sets a one-time password live
(passwd and passwdValidTo in the secure live XML), names the live graphics port, and
that port accepts a TCP connection on the listen address."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

from kvmmanager.core.config import Settings
from kvmmanager.services.vms.builder import VmSpec
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.validate import validate_xml, validator_available

pytestmark = [pytest.mark.libvirtd, pytest.mark.vm]
URI = "qemu:///system"
PREFIX = "kvmm-t-spicereal-"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.libvirt.default_uri = URI
    return settings


@pytest.fixture
def name() -> Iterator[str]:
    vm = f"{PREFIX}{uuid.uuid4().hex[:8]}"
    yield vm
    conn = libvirt.open(URI)
    try:
        for dom in conn.listAllDomains():
            if dom.name().startswith(PREFIX):
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    finally:
        conn.close()


async def test_vv_ticket_on_a_running_spice_vm(manager: Any, name: str) -> None:
    await manager.registry.get("local").wait_connected(60)
    spec = VmSpec(name=name, memory_mib=64, spice=True, usb_redirection=True)
    await manager.vms.create("local", spec)
    conn = libvirt.open(URI)
    try:
        dom = conn.lookupByName(name)
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        if validator_available():
            validate_xml(xml, "domain")
        d = Domain.from_xml(xml)
        assert [(r.bus, r.type) for r in d.devices.redirdevs] == [("usb", "spicevmc")] * 2
        usb = [c for c in d.devices.controllers if c.type == "usb"]
        assert [c.model for c in usb] == ["qemu-xhci"]
        dom.create()
        ticket = await manager.spice.vv_file("local", name)
        live = Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))
        (gfx,) = [g for g in live.devices.graphics if g.type == "spice"]
        assert gfx.passwd and f"password={gfx.passwd}" in ticket.content
        assert gfx.passwd_valid_to and ticket.expires_at.startswith(gfx.passwd_valid_to)
        assert gfx.port and int(gfx.port) == ticket.port
        assert f"port={ticket.port}" in ticket.content
        listen = gfx.listen_address or "127.0.0.1"
        with socket.create_connection((listen, ticket.port), timeout=10) as s:
            assert s.getpeername()[1] == ticket.port
        # Without the secure flag the password stays out of the XML.
        assert gfx.passwd not in dom.XMLDesc(0)
    finally:
        conn.close()
