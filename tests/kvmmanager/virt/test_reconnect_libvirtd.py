"""The real thing: libvirtd dies and comes back while a HostConnection is open.

Issue 2 demands: the host shows `reconnecting`, then `connected`, and the inventory is
correct again within 5 s of libvirtd being back, without restarting anything of ours.
libvirtd is shared by everyone on this machine: the test always starts it again (finally).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import libvirt
import pytest

from kvmmanager.core.config import LibvirtSettings
from kvmmanager.virt.connection import HostConnection
from kvmmanager.virt.helper_guests import is_helper_guest
from kvmmanager.virt.readers import state_name
from kvmmanager.virt.xml.domain import Domain

pytestmark = pytest.mark.libvirtd

URI = "qemu:///system"
PIDFILE = Path("/run/kvm-manager/libvirtd.pid")
START = Path(__file__).parents[3] / "scripts" / "start-libvirtd"


def _start_libvirtd() -> None:
    subprocess.run([str(START)], check=True, timeout=60)


def _stop_libvirtd() -> None:
    pid = int(PIDFILE.read_text().strip())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    # start-libvirtd leaves a daemon whose pid is alive alone: wait until it is gone.
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            raise AssertionError("libvirtd did not exit within 30 s of SIGTERM")
        time.sleep(0.05)


def _listing() -> dict[str, tuple[str, str]]:
    conn = libvirt.open(URI)
    try:
        # Without the manager's own helper guests (another manager's accelerator probe on
        # the shared libvirtd), which the inventory leaves out by design.
        return {
            d.UUIDString(): (d.name(), state_name(d.state()[0]))
            for d in conn.listAllDomains(0)
            if not is_helper_guest(d.name())
        }
    finally:
        conn.close()


def _kill_qemu(name: str) -> None:
    """Kill the guest's QEMU while libvirtd is away: libvirt finds it dead on restart and
    sends no event to anyone (nobody is connected), so only a resync can tell us."""
    pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            raise AssertionError("QEMU did not exit within 30 s of SIGKILL")
        time.sleep(0.05)


@pytest.fixture
def running_domain():
    """A tiny persistent TCG guest (no disk: its firmware idles), running."""
    name = f"kvmm-t-host-rc-{uuid.uuid4().hex[:6]}"
    dom = Domain(type="qemu", name=name, memory=16 * 1024, current_memory=16 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch = "hvm", "x86_64"
    conn = libvirt.open(URI)
    try:
        conn.defineXML(dom.to_xml()).create()
    finally:
        conn.close()
    yield name
    _start_libvirtd()
    conn = libvirt.open(URI)
    try:
        with contextlib.suppress(libvirt.libvirtError):
            d = conn.lookupByName(name)
            if d.isActive():
                d.destroy()
            d.undefine()
    finally:
        conn.close()


async def test_libvirtd_restart_reconnects_and_resyncs(bus, inventory, running_domain):
    host = HostConnection("kvmm-t-host-real", URI, bus, inventory, LibvirtSettings())
    statuses = bus.subscribe(predicate=lambda e: e.kind == "host.status")
    await host.start()
    try:
        await host.wait_connected(60)
        before = inventory.domain(host.name, running_domain)
        assert before.state == "running"
        try:
            await asyncio.to_thread(_stop_libvirtd)
            await asyncio.to_thread(_kill_qemu, running_domain)
            async with asyncio.timeout(30):
                while (await statuses.get()).data["status"] != "reconnecting":
                    pass
            assert host.status_reason
        finally:
            await asyncio.to_thread(_start_libvirtd)

        # Within 5 s of libvirtd answering again: connected, and the mirror equals a
        # fresh listing (polled: other people's VMs may change meanwhile).
        mirror: dict[str, tuple[str, str]] = {}
        truth: dict[str, tuple[str, str]] = {}
        try:
            async with asyncio.timeout(5):
                while True:
                    truth = await asyncio.to_thread(_listing)
                    mirror = {d.uuid: (d.name, d.state) for d in inventory.domains(host.name)}
                    stopped = mirror.get(before.uuid, ("", ""))[1] == "shutoff"
                    if host.connected and stopped and mirror == truth:
                        break
                    await asyncio.sleep(0.05)
        except TimeoutError:
            pytest.fail(f"not correct 5 s after restart: {host!r}, mirror {mirror}, truth {truth}")
    finally:
        await host.stop()


async def test_real_daemon_inventory_and_callbacks(bus, inventory):
    """Without killing anything: the mirror of qemu:///system equals a fresh listing, and
    the QEMU monitor relay (agent port open/close) is registered besides libvirt's events."""
    host = HostConnection("kvmm-t-host-real2", URI, bus, inventory, LibvirtSettings())
    await host.start()
    try:
        await host.wait_connected(60)
        kinds = {kind for kind, _ in host.conn._kvmm_callback_ids}
        assert kinds == {"domain", "pool", "network", "qemu"}
        async with asyncio.timeout(30):
            while True:
                truth = await asyncio.to_thread(_listing)
                mirror = {d.uuid: (d.name, d.state) for d in inventory.domains(host.name)}
                if mirror == truth:
                    break
                await asyncio.sleep(0.05)
    finally:
        await host.stop()
