"""Scenario 1: the original checklist, automated. The manager creates the VM (direct
kernel boot, a qcow2 data disk, a NIC on an isolated network), deploys the agent ISO
into a pool, install-agent inserts it, the VM starts, the guest's administrator (its
init) installs the agent FROM THE CD, and the agent connects (seen as an event)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from .conftest import Fleet, Lab

pytestmark = pytest.mark.vm


def test_iso_deployed_into_the_pool(lab: Lab, agent_iso: dict) -> None:
    vols = lab.api.volumes(lab.pool)
    isos = [v for v in vols if v["name"].endswith(".iso")]
    assert isos, f"no ISO volume in {lab.pool}: {vols}"
    assert all(v["capacity"] > 0 for v in isos)


def test_vm_defined_as_the_spec_says(lab: Lab, fleet: Fleet) -> None:
    g = fleet.agent
    assert g.created["domain_type"] in ("qemu", "kvm")
    dom = g.domain_xml()
    os_ = dom.find("os")
    assert os_ is not None
    assert os_.findtext("kernel") == str(lab.image.kernel)
    assert os_.findtext("initrd") == str(lab.image.initrd)
    assert f"kvmm.hostname={g.hostname}" in (os_.findtext("cmdline") or "")
    channels = {t.get("name") for t in dom.iter("target") if t.get("type") == "virtio"}
    assert {"org.kvmmanager.agent.0", "org.qemu.guest_agent.0"} <= channels
    disks = dom.findall("./devices/disk")
    data = [d for d in disks if d.get("device") == "disk"]
    assert len(data) == 1
    assert (data[0].find("driver").get("type")) == "qcow2"
    cdrom = [d for d in disks if d.get("device") == "cdrom"]
    assert cdrom and cdrom[0].find("source") is not None, "install-agent inserted no ISO"
    nic = dom.find("./devices/interface/source")
    assert nic is not None and nic.get("network") == lab.network


def test_agent_installed_from_the_cd_and_connected(lab: Lab, fleet: Fleet) -> None:
    g = fleet.agent
    console = g.console_text()
    assert "cdrom mounted" in console
    assert "(plain install)" in console, "install.sh did not take the plain copy path"
    assert "install.sh rc=0" in console
    assert "service agent started" in console
    vm = lab.api.vm(g.name)
    assert vm["agent_status"] == "connected"
    assert lab.api.ping(g.name)["pong"] is True
    # Boot-to-agent figures for docs/performance.md (bench/e2e_agent.py reads them too).
    (lab.log_dir / "boot.json").write_text(json.dumps(fleet.boot_seconds))
    assert all(s > 0 for s in fleet.boot_seconds.values())


def test_channel_state_in_live_xml(fleet: Fleet) -> None:
    dom: ET.Element = fleet.agent.domain_xml()
    states = {
        t.get("name"): t.get("state") for t in dom.iter("target") if t.get("type") == "virtio"
    }
    assert states["org.kvmmanager.agent.0"] == "connected"
