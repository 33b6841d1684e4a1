"""Scenario 6: a guest running only Debian's stock qemu-guest-agent. Its addresses, OS,
file systems and users appear through the manager (libvirt's agent APIs), in the same
guest-info model as our agent's."""

from __future__ import annotations

import pytest

from .conftest import Fleet, Lab

pytestmark = pytest.mark.vm


def test_qga_status_connected(lab: Lab, fleet: Fleet) -> None:
    vm = lab.api.vm(fleet.qga.name)
    assert vm["qga_status"] == "connected"
    assert vm["agent_status"] != "connected"  # our agent is not installed there


def test_qga_addresses(lab: Lab, fleet: Fleet) -> None:
    r = lab.api.agent(fleet.qga.name, "network")
    by_mac = {i["mac_address"].lower(): i for i in r["interfaces"]}
    assert f"{fleet.qga.ip}/24" in by_mac[fleet.qga.mac]["ipv4_addresses"]


def test_qga_os(lab: Lab, fleet: Fleet) -> None:
    r = lab.api.agent(fleet.qga.name, "system")
    assert r["os_name"].startswith("kvmm-e2e test guest")
    assert r["kernel_version"] == lab.image.kernel_version
    assert r["hostname"] == fleet.qga.hostname


def test_qga_filesystems(lab: Lab, fleet: Fleet) -> None:
    r = lab.api.agent(fleet.qga.name, "disks")
    data = [f for f in r["filesystems"] if f["mount_point"] == "/data"]
    assert data and data[0]["total_bytes"] > 0


def test_qga_users(lab: Lab, fleet: Fleet) -> None:
    r = lab.api.agent(fleet.qga.name, "users")
    assert r["source"] == "qga"
    assert any(u["user"] == "root" for u in r["users"])


def test_one_guest_info_model_for_both_agents(lab: Lab, fleet: Fleet) -> None:
    ours = lab.api.agent(fleet.agent.name, "info")
    stock = lab.api.agent(fleet.qga.name, "info")
    assert (ours["source"], stock["source"]) == ("kvmm", "qga")
    assert set(ours) == set(stock)
    for info, g in ((ours, fleet.agent), (stock, fleet.qga)):
        assert info["hostname"] == g.hostname
        assert info["kernel_version"] == lab.image.kernel_version
        assert any(f"{g.ip}/24" in i["ipv4_addresses"] for i in info["interfaces"])
        assert any(f["mount_point"] == "/data" for f in info["filesystems"])
