"""The project's agent follows its VM to the second host: the e2e test guest (direct
kernel boot, tests/e2e/guest) installs the agent from the agent ISO, the ISO is ejected
(the second host has no copy of it), the VM migrates live, and the manager talks to the
same agent process on the other side."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import libvirt
import pytest

from kvmmanager.core.errors import AgentUnavailable
from kvmmanager.virt.xml.devices import KVMM_AGENT_CHANNEL, Channel, Serial
from kvmmanager.virt.xml.domain import Domain
from kvmmanager.virt.xml.validate import validate_xml

from .conftest import LOCAL_URI, WAIT, PoolPair, define_and_start, in_inventory, until
from .second_host import SecondHost

pytestmark = [pytest.mark.libvirtd, pytest.mark.vm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def guest_image() -> dict[str, Any]:
    """The e2e guest's kernel and initrd (built once, cached in .cache/e2e-guest)."""
    p = subprocess.run(
        [sys.executable, "-m", "tests.e2e.guest.build"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode != 0:
        pytest.fail(f"building the e2e guest failed: {p.stderr.strip()}")
    return json.loads(p.stdout)


def guest_xml(name: str, image: dict[str, Any]) -> str:
    dom = Domain(type="qemu", name=name, memory=384 * 1024, vcpus=1)
    dom.os.os_type, dom.os.arch, dom.os.machine = "hvm", "x86_64", "pc"
    dom.os.kernel, dom.os.initrd = image["kernel"], image["initrd"]
    dom.os.cmdline = f"console=ttyS0 quiet kvmm.mode=agent kvmm.hostname={name}"
    dom.features.acpi = True
    dom.devices.add(Channel(type="unix", target_type="virtio", target_name=KVMM_AGENT_CHANNEL))
    dom.devices.add(Serial(type="pty"))
    xml = dom.to_xml()
    validate_xml(xml, "domain")
    return xml


def agent_connected(m: Any, host: str, uuid: str) -> bool:
    return any(d.uuid == uuid and d.agent_status == "connected" for d in m.inventory.domains(host))


async def ping(m: Any, host: str, vm: str) -> dict[str, Any]:
    """Ping until the agent answers. "connected" comes from libvirt (the guest opened its
    port); a TCG guest on a machine shared by many test runs may still miss a sync, after
    which the client calls the agent unresponsive: then reconnect it, as a user would."""
    async with asyncio.timeout(WAIT):
        while True:
            try:
                return await m.agents.ping(host, vm)
            except AgentUnavailable:
                with contextlib.suppress(AgentUnavailable):
                    await m.agents.reconnect(host, vm)


def cdrom_sources(uuid: str) -> list[str]:
    conn = libvirt.open(LOCAL_URI)
    try:
        xml = conn.lookupByUUIDString(uuid).XMLDesc(0)
    finally:
        conn.close()

    return [d.source_path for d in Domain.from_xml(xml).devices.cdroms() if d.source_path]


async def test_agent_reconnects_after_live_migration(
    two_hosts: Any,
    pool_pair: PoolPair,
    vm_name: str,
    guest_image: dict[str, Any],
    second_host: SecondHost,
) -> None:
    m = two_hosts
    # Syncs of a starved TCG guest (2 cores shared by parallel runs) can take seconds.
    m.settings.agent.ping_timeout_seconds = 30.0
    uuid = await define_and_start(m, guest_xml(vm_name, guest_image), start=False)
    await until(m, lambda: in_inventory(m, "local", uuid))
    installed = await m.iso.install_agent("local", vm_name, pool_pair.name)
    assert installed.cdrom_added
    await m.vms.action("local", vm_name, "start")
    await until(m, lambda: agent_connected(m, "local", uuid))
    assert (await ping(m, "local", vm_name))["source"] == "kvmm"
    before = await m.agents.guest_info("local", vm_name)

    # The ISO lives in a pool only this host has: eject it, as an administrator would.
    await m.iso.eject_agent("local", vm_name)
    assert await asyncio.to_thread(cdrom_sources, uuid) == []

    job_id = await m.migration.start("local", vm_name, "h2")
    async with asyncio.timeout(WAIT):
        job = await m.jobs.wait(job_id)
    assert job.state == "done", job.error
    await until(m, lambda: agent_connected(m, "h2", uuid))
    assert (await ping(m, "h2", vm_name))["source"] == "kvmm"
    after = await m.agents.guest_info("h2", vm_name)
    # The same guest answers on the other side: its uptime went on, no reboot.
    assert after.source == "kvmm" and after.hostname == vm_name
    assert after.uptime_seconds is not None and before.uptime_seconds is not None
    assert after.uptime_seconds > before.uptime_seconds
    assert not in_inventory(m, "local", uuid)
