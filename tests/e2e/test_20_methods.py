"""Scenario 2: the ten original methods, each checked against a fact the test knows
(it chose the hostname, IP, data disk size; libvirt chose the MAC; the image builder
knows the kernel)."""

from __future__ import annotations

import base64

import pytest

from .conftest import Fleet, Lab
from .support.guests import DATA_DISK_GIB

pytestmark = pytest.mark.vm


def test_ping(lab: Lab, fleet: Fleet) -> None:
    r = lab.api.ping(fleet.agent.name)
    assert r["pong"] is True
    assert r["timestamp"]


def test_get_agent_info(lab: Lab, fleet: Fleet) -> None:
    from kvmmanager_agent import __version__

    r = lab.api.agent(fleet.agent.name, "agent-info")
    assert r["version"] == __version__
    assert r["protocol_version"]
    assert r["platform"]
    # The allow-list in the guest's config enables exec; its files settings enable files.
    assert {"ping", "exec_command", "file_read", "file_write"} <= set(r["capabilities"])


def test_get_system_info(lab: Lab, fleet: Fleet) -> None:
    r = lab.api.agent(fleet.agent.name, "system")
    assert r["hostname"] == fleet.agent.hostname
    assert r["kernel_version"] == lab.image.kernel_version
    assert r["os_type"].lower() == "linux"
    assert r["os_name"].startswith("kvmm-e2e test guest")
    assert r["architecture"] == "x86_64"
    assert r["cpu_count"] == 1
    assert 256 * 1024 < r["total_memory_kb"] <= 384 * 1024
    assert r["uptime_seconds"] > 0


def test_get_network_info(lab: Lab, fleet: Fleet) -> None:
    r = lab.api.agent(fleet.agent.name, "network")
    by_mac = {i["mac_address"].lower(): i for i in r["interfaces"]}
    assert fleet.agent.mac in by_mac, f"MAC {fleet.agent.mac} of the domain XML not seen"
    eth = by_mac[fleet.agent.mac]
    assert f"{fleet.agent.ip}/24" in eth["ipv4_addresses"]
    assert eth["mtu"] > 0
    assert any(i["name"] == "lo" for i in r["interfaces"])


def test_exec_command(lab: Lab, fleet: Fleet) -> None:
    r = lab.api.exec(fleet.agent.name, "uname", "-r")
    assert r["exit_code"] == 0
    assert r["stdout"].strip() == lab.image.kernel_version
    r = lab.api.exec(fleet.agent.name, "cat", "/etc/hostname")
    assert r["stdout"].strip() == fleet.agent.hostname
    r = lab.api.exec(fleet.agent.name, "false")
    assert r["exit_code"] == 1
    assert r["execution_time_ms"] >= 0


def test_file_write_then_read(lab: Lab, fleet: Fleet) -> None:
    vm = fleet.agent.name
    text = "written by kvmm-e2e \u2713\n"
    w = lab.api.write_file(vm, "/data/e2e-hello.txt", text)
    assert w["bytes_written"] == len(text.encode())
    r = lab.api.read_file(vm, "/data/e2e-hello.txt")
    assert r["content"] == text
    assert r["size_bytes"] == len(text.encode())
    blob = bytes(range(256))
    lab.api.write_file(vm, "/tmp/e2e.bin", base64.b64encode(blob).decode(), "base64")
    r = lab.api.read_file(vm, "/tmp/e2e.bin", "base64")
    assert base64.b64decode(r["content"]) == blob
    # The guest itself agrees: its sha256sum of the file is ours.
    out = lab.api.exec(vm, "sha256sum", "/data/e2e-hello.txt")["stdout"]
    import hashlib

    assert out.split()[0] == hashlib.sha256(text.encode()).hexdigest()


def test_get_disk_usage(lab: Lab, fleet: Fleet) -> None:
    r = lab.api.agent(fleet.agent.name, "disks")
    data = [f for f in r["filesystems"] if f["mount_point"] == "/data"]
    assert data, r
    fs = data[0]
    size = int(DATA_DISK_GIB * 1024**3)
    assert fs["device"] == "/dev/vda"
    # ext2 metadata takes a few percent of the 64 MiB disk the manager created.
    assert 0.85 * size < fs["total_bytes"] <= size
    assert fs["used_bytes"] + fs["available_bytes"] <= fs["total_bytes"]
    assert 0 <= fs["used_percent"] <= 100
