"""A VM's VNC display opens no TCP port: it listens on a unix socket in the domain's
private directory, and the browser console still reaches it through libvirt
(virDomainOpenGraphicsFD), over the same noVNC WebSocket as before.

Before: every VM listened on 127.0.0.1:590x, reachable by any local user (the docs
said no port was exposed)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from fastapi.testclient import TestClient

from kvmmanager.core.config import Settings
from kvmmanager.services.vms.builder import BuildInputs, VmSpec, build_domain
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.web.app import create_app

pytestmark = pytest.mark.libvirtd

URI = "qemu:///system"


@pytest.fixture
def running_vm() -> Iterator[tuple[libvirt.virDomain, str]]:
    """A diskless TCG guest (BIOS only: enough for a display) built by the product's own
    domain builder; destroyed and undefined afterwards."""
    name = f"kvmm-t-secvalid-vnc-{uuid.uuid4().hex[:8]}"
    dom_xml = build_domain(VmSpec(name=name, memory_mib=64), BuildInputs("qemu", "x86_64", []))
    conn = libvirt.open(URI)
    dom = conn.defineXML(dom_xml.to_xml())
    try:
        dom.create()
        yield dom, name
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        conn.close()


def _tcp_listen_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def test_the_vnc_display_opens_no_tcp_port(running_vm: tuple[libvirt.virDomain, str]) -> None:
    dom, name = running_vm
    (gfx,) = [g for g in Domain.from_xml(dom.XMLDesc(0)).devices.graphics if g.type == "vnc"]
    assert gfx.port in (None, -1), gfx.port
    assert gfx.listen_socket
    pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text())
    assert not _socket_inodes(pid) & _tcp_listen_inodes(), "QEMU listens on a TCP port"


def test_the_browser_console_still_reaches_it(
    settings: Settings, running_vm: tuple[libvirt.virDomain, str]
) -> None:
    _, name = running_vm
    settings.libvirt.default_uri = URI
    app = create_app(settings)
    with TestClient(app) as c:
        manager = app.state.manager
        c.portal.call(manager.registry.get("local").wait_connected, 60)
        _, secret = manager.users.create_token("admin", "kvmm-t-secvalid-vnc")
        auth = {"Authorization": f"Bearer {secret}"}
        with c.websocket_connect(f"/vms/local/{name}/console/vnc", headers=auth) as ws:
            assert ws.receive_bytes().startswith(b"RFB 003.")
