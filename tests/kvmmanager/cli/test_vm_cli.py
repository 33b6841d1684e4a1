"""`kvm-manager vm ...` against a live server on the test driver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import libvirt
import pytest

from kvmmanager.cli.commands.vm import _gap_line

POOL = "default-pool"


@pytest.fixture
def vm_cli(cli, live_server):
    host = live_server.manager.registry.get("local")
    deadline = time.monotonic() + 30
    while not host.connected:
        assert time.monotonic() < deadline, "local host did not connect"
        time.sleep(0.02)
    yield cli
    c = libvirt.open("test:///default")
    for dom in c.listAllDomains():
        if dom.name().startswith("kvmm-t-vm-"):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    for vol in c.storagePoolLookupByName(POOL).listAllVolumes():
        if vol.name().startswith("kvmm-t-vm-"):
            vol.delete(0)
    c.close()


def _json(result):
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def test_vm_commands(vm_cli):
    name = f"kvmm-t-vm-{uuid.uuid4().hex[:8]}"
    created = _json(
        vm_cli("--json", "vm", "create", name, "--memory", "128", "--disk", f"{POOL}:1",
               "--network", "default", "--tag", "cli")
    )  # fmt: skip
    assert created["vm"]["name"] == name and created["domain_type"] in ("kvm", "qemu")

    table = vm_cli("vm", "list", "--tag", "cli")
    assert table.exit_code == 0 and name in table.stdout and "shutoff" in table.stdout
    assert _json(vm_cli("--json", "vm", "show", name))["tags"] == ["cli"]

    assert _json(vm_cli("--json", "vm", "start", name))["state"] == "running"
    again = vm_cli("vm", "start", name)
    assert again.exit_code == 5  # Conflict
    assert again.stderr.startswith("error: ") and "already running" in again.stderr

    edited = _json(vm_cli("--json", "vm", "edit", name, "--memory", "64"))
    assert edited["edits"]["memory_mib"]["applied_live"] is True

    assert _json(vm_cli("--json", "vm", "destroy", name))["state"] == "shutoff"
    res = vm_cli("--json", "vm", "media", "eject", name)
    assert res.exit_code == 0, res.stderr
    disk = _json(vm_cli("--json", "vm", "attach-disk", name, f"{POOL}:1"))
    assert disk["details"]["target"] == "vdb" and disk["next_boot"]
    nic = _json(vm_cli("--json", "vm", "attach-nic", name, "--network", "default"))
    assert _json(vm_cli("--json", "vm", "detach-nic", name, nic["details"]["mac"]))["next_boot"]
    xml = vm_cli("vm", "xml", name, "--inactive")
    assert xml.exit_code == 0 and "<domain" in xml.stdout and "vdb" in xml.stdout
    edited = _json(vm_cli("--json", "vm", "edit", name, "--tag", "x", "--tag", "y"))
    assert edited["vm"]["message"] == "tags updated"
    assert vm_cli("vm", "edit", name).exit_code == 2  # nothing to change
    deleted = _json(vm_cli("--json", "vm", "delete", name, "--remove-volumes"))
    assert len(deleted["deleted_volumes"]) == 2


def test_bad_input_exits_2_naming_the_problem(vm_cli):
    res = vm_cli("vm", "create", "bad/name")
    assert res.exit_code == 2 and "'/'" in res.stderr
    res = vm_cli("vm", "create", "kvmm-t-vm-x", "--disk", "nosize")
    assert res.exit_code == 2 and "--disk" in res.stderr
    res = vm_cli("vm", "show", "kvmm-t-vm-missing")
    assert res.exit_code == 4


def _kvm_manager(live_server, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `kvm-manager` command, as a process, against the live server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVMM_")}
    env.update(KVMM_URL=live_server.url, KVMM_TOKEN=live_server.token, COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "kvmmanager.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_max_vcpus_and_memory_for_hot_add(vm_cli, live_server):
    """Issue 17 item 7: `--max-vcpus`/`--max-memory` at create and edit; a running VM
    grows live up to them; a maximum below what the VM has is refused naming the flags."""
    name = f"kvmm-t-vm-{uuid.uuid4().hex[:8]}"
    bad = _kvm_manager(live_server, "vm", "create", name, "--vcpus", "2", "--max-vcpus", "1")
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.startswith("error: --max-vcpus 1 is less than --vcpus 2"), bad.stderr
    bad = _kvm_manager(live_server, "vm", "create", name, "--memory", "256", "--max-memory", "128")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: --max-memory 128 is less than --memory 256"), bad.stderr
    made = _kvm_manager(
        live_server, "--json", "vm", "create", name, "--vcpus", "1", "--max-vcpus", "4",
        "--memory", "128", "--max-memory", "512", "--start",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    vm = json.loads(made.stdout)["vm"]
    assert (vm["vcpus"], vm["max_vcpus"], vm["max_memory_kib"]) == (1, 4, 512 * 1024)
    grown = _kvm_manager(live_server, "vm", "edit", name, "--vcpus", "3", "--memory", "384")
    assert grown.returncode == 0, grown.stderr
    assert "vcpus: vCPUs set to 3: applied now" in grown.stderr, grown.stderr
    assert "memory_mib: memory set to 384 MiB: applied now" in grown.stderr, grown.stderr
    later = _kvm_manager(live_server, "vm", "edit", name, "--max-vcpus", "8")
    assert later.returncode == 0, later.stderr
    assert "maximum set to 8 vCPUs from the next boot" in later.stderr
    bad = _kvm_manager(live_server, "vm", "edit", name, "--max-vcpus", "2")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: --max-vcpus 2 is less than --vcpus 3"), bad.stderr


def test_user_mode_nic_from_the_command_line(vm_cli, live_server):
    """Issue 17 item 5: `vm create --user-net` and `vm attach-nic --user` (there was no
    --user); the answer names the backend the NIC got."""
    name = f"kvmm-t-vm-{uuid.uuid4().hex[:8]}"
    made = _kvm_manager(live_server, "--json", "vm", "create", name, "--memory", "64", "--user-net")
    assert made.returncode == 0, made.stderr
    added = _kvm_manager(live_server, "--json", "vm", "attach-nic", name, "--user")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["details"]["source"] == "user (slirp)"
    nics = json.loads(_kvm_manager(live_server, "--json", "vm", "show", name).stdout)["nics"]
    assert [n["type"] for n in nics] == ["user", "user"]
    both = _kvm_manager(live_server, "vm", "attach-nic", name, "--user", "--network", "default")
    assert both.returncode == 2
    assert "exactly one of network, bridge or user" in both.stderr


def test_list_refuses_an_unknown_state(vm_cli):
    # Issue 17's try: a misspelt --state listed nothing and exited 0.
    res = vm_cli("vm", "list", "--state", "bogus")
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert "--state" in res.stderr and "bogus" in res.stderr and "shutoff" in res.stderr
    assert vm_cli("vm", "list", "--state", "running").exit_code == 0


def test_show_prints_sizes_for_people_and_raw_numbers_in_json(vm_cli):
    """Issue 17's independent try, item 9: byte fields printed as raw integers."""
    name = f"kvmm-t-vm-{uuid.uuid4().hex[:8]}"
    _json(vm_cli("--json", "vm", "create", name, "--memory", "128", "--disk", f"{POOL}:1"))
    shown = vm_cli("vm", "show", name)
    assert shown.exit_code == 0, shown.stderr
    assert "128.0 MiB" in shown.stdout and "131072" not in shown.stdout
    assert _json(vm_cli("--json", "vm", "show", name))["memory_kib"] == 131072
    vols = vm_cli("vol", "list", POOL)
    assert vols.exit_code == 0 and "1.0 GiB" in vols.stdout, vols.stdout


def test_list_prints_a_line_naming_a_host_never_listed(vm_cli, live_server):
    gone = "qemu+unix:///system?socket=/nonexistent/kvmm-t-vm-gone.sock"
    added = vm_cli("host", "add", "kvmm-t-vm-gone", gone)
    assert added.exit_code == 0, (added.stdout, added.stderr)
    hc = live_server.manager.registry.get("kvmm-t-vm-gone")
    deadline = time.monotonic() + 30
    while hc.status != "failed":
        assert time.monotonic() < deadline, hc.status
        time.sleep(0.02)
    table = vm_cli("vm", "list")
    assert table.exit_code == 0, (table.stdout, table.stderr)
    assert "test" in table.stdout
    assert (
        "host kvmm-t-vm-gone is failed and has not been listed since the manager started: "
        "its VMs are missing"
    ) in table.stderr
    # --json keeps stdout the list of VMs; the line still goes to stderr.
    as_json = vm_cli("vm", "list", "--json")
    assert "test" in {v["name"] for v in _json(as_json)}
    assert "kvmm-t-vm-gone" in as_json.stderr


def test_a_missing_host_line_does_not_claim_the_host_was_never_listed() -> None:
    """After a manager restart while a host is frozen, the host is missing from the list
    though the same database listed it before: the inventory is in memory, so the line
    says "since the manager started" (as the web page does), never "never listed"."""
    line = _gap_line(
        {"host": "kvmm-t-frozen", "status": "not responding", "reason": "", "missing": True}
    )
    assert line == (
        "host kvmm-t-frozen is not responding and has not been listed since the manager "
        "started: its VMs are missing from this list"
    )
