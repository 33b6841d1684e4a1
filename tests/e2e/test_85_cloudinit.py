"""Scenario 8.5: cloud-init provisioning for real, and a clone's new identity.

A debootstrap Debian 12 disk with cloud-init inside (tests/e2e/cloud/build.py, cached
under .cache/e2e-cloud/) is uploaded as a volume through the API, then
POST .../vms/from-cloud-image makes a linked disk at a bigger size and a NoCloud seed
(hostname, a user with an SSH key and a password, the agent installer) and boots it.
Nothing else is done to the guest: cloud-init sets it up and installs our agent from
the seed, and every check goes THROUGH THAT AGENT. Then the VM is shut down and cloned:
the clone gets a seed of its own, and comes up with its own hostname, machine-id and
SSH host key.

The image boots its own kernel directly (it has no bootloader: the root file system is
the whole disk). Measured on the 2-core CI machine under TCG (docs/performance.md, e2e):
image build 181 s once (then cached: under 1 s), upload ~3 s, boot to agent answering
~70 s (systemd + four cloud-init stages + dpkg installing the agent). Timeouts below
are generous wall-clock limits for waits, never assertions.
"""

from __future__ import annotations

import base64
import contextlib
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .cloud.build import CloudImage, build_cloud_image
from .conftest import Lab
from .support.api import ApiError
from .support.console import ConsoleLog
from .support.events import agent_event, lifecycle_event
from .support.guests import LIBVIRT_URI

pytestmark = pytest.mark.vm
BOOT_TIMEOUT = 900  # systemd + cloud-init under TCG on a busy 2-core machine
MEMORY_MIB = 768
PASSWORD = "kvmm-e2e-not-secret"


def ssh_key() -> str:
    blob = b"".join(struct.pack(">I", len(p)) + p for p in (b"ssh-ed25519", os.urandom(32)))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} e2e@kvmm"


@dataclass
class CloudVm:
    name: str
    hostname: str
    user: str
    key: str
    created: dict[str, Any]
    build_seconds: float
    upload_seconds: float
    boot_seconds: float


def wait_agent(lab: Lab, name: str, mark: int) -> None:
    """The agent's connected event, then a ping that answers."""
    lab.events.wait(agent_event(name, "connected"), timeout=BOOT_TIMEOUT, after=mark)
    deadline = time.monotonic() + 120
    while True:
        try:
            lab.api.ping(name)
            return
        except ApiError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def run(lab: Lab, vm: str, *args: str, timeout: int = 60) -> str:
    res = lab.api.exec(vm, args[0], *args[1:], timeout=timeout)
    assert res["exit_code"] == 0, res
    return res["stdout"]


def remove(lab: Lab, name: str) -> None:
    with contextlib.suppress(ApiError):
        lab.api.action(name, "destroy")
    with contextlib.suppress(ApiError):
        lab.api.delete_vm(name)
    # CD-ROM media stay with remove_volumes: the seed goes on its own.
    with contextlib.suppress(ApiError):
        lab.api.call("DELETE", lab.api._h(f"pools/{lab.pool}/volumes/{name}-seed.iso"))


@pytest.fixture(scope="module")
def cloud_image() -> tuple[CloudImage, float]:
    started = time.monotonic()
    image = build_cloud_image()
    return image, time.monotonic() - started


@pytest.fixture(scope="module")
def image_volume(lab: Lab, cloud_image: tuple[CloudImage, float]) -> Iterator[tuple[str, float]]:
    image, _ = cloud_image
    vol = f"{lab.name('cloudimg')}.qcow2"
    started = time.monotonic()
    with image.disk.open("rb") as fh:
        lab.api.call(
            "PUT",
            lab.api._h(f"pools/{lab.pool}/volumes/{vol}/content"),
            params={"create": True, "format": "qcow2"},
            content=fh,
            headers={"Content-Length": str(image.disk_bytes)},
        )
    yield vol, time.monotonic() - started
    with contextlib.suppress(ApiError):
        lab.api.call("DELETE", lab.api._h(f"pools/{lab.pool}/volumes/{vol}"))


@pytest.fixture(scope="module")
def cloud_vm(
    lab: Lab, cloud_image: tuple[CloudImage, float], image_volume: tuple[str, float]
) -> Iterator[CloudVm]:
    image, build_seconds = cloud_image
    vol, upload_seconds = image_volume
    name = lab.name("ci")
    hostname = f"kvmm-ci-{lab.run_id}"
    key = ssh_key()
    body = {
        "name": name,
        "pool": lab.pool,
        "image": vol,
        "size_gib": 3,  # the image is 2 GiB: cloud-init grows the file system
        "memory_mib": MEMORY_MIB,
        "cloud_init": {
            "hostname": hostname,
            "users": [{"name": "alice", "ssh_authorized_keys": [key], "password": PASSWORD}],
        },
        "boot": {
            "kernel": str(image.kernel),
            "initrd": str(image.initrd),
            "cmdline": image.cmdline,
        },
        "start": False,
    }
    created = lab.api.call("POST", lab.api._h("vms/from-cloud-image"), json=body)
    try:
        mark = lab.events.mark()
        started = time.monotonic()
        lab.api.action(name, "start")
        console = ConsoleLog(LIBVIRT_URI, name, lab.log_dir / f"{name}.console.log").start()
        try:
            wait_agent(lab, name, mark)
        finally:
            boot = time.monotonic() - started
        print(f"cloud image: build {build_seconds:.1f} s, upload {upload_seconds:.1f} s, "
              f"boot to agent {boot:.1f} s")  # fmt: skip
        yield CloudVm(name, hostname, "alice", key, created, build_seconds, upload_seconds, boot)
        del console
    finally:
        remove(lab, name)


def test_provisioned_through_the_manager(lab: Lab, cloud_vm: CloudVm) -> None:
    c = cloud_vm.created
    assert c["agent"] is True and c["hostname"] == cloud_vm.hostname
    vols = {v["name"]: v for v in lab.api.volumes(lab.pool)}
    assert vols[c["disk"]]["capacity"] == 3 * 1024**3
    assert c["seed"] in vols


def test_hostname_user_and_key_seen_through_the_agent(lab: Lab, cloud_vm: CloudVm) -> None:
    system = lab.api.agent(cloud_vm.name, "system")
    assert system["hostname"] == cloud_vm.hostname
    keys = lab.api.read_file(cloud_vm.name, "/home/alice/.ssh/authorized_keys")
    assert cloud_vm.key in keys["content"].splitlines()
    passwd = run(lab, cloud_vm.name, "getent", "passwd", "alice")
    assert passwd.startswith("alice:x:") and passwd.rstrip().endswith(":/bin/bash")
    # The password arrived as a SHA-512 crypt hash that checks out against the clear text.
    check = (
        "import crypt, spwd, sys; h = spwd.getspnam('alice').sp_pwdp; "
        f"sys.exit(0 if h.startswith('$6$') and crypt.crypt({PASSWORD!r}, h) == h else 1)"
    )
    run(lab, cloud_vm.name, "python3", "-W", "ignore", "-c", check)


def test_the_agent_came_up_by_itself(lab: Lab, cloud_vm: CloudVm) -> None:
    """Installed by cloud-init's runcmd from the seed (dpkg, systemd unit), nobody else."""
    assert lab.api.vm(cloud_vm.name)["agent_status"] == "connected"
    run(lab, cloud_vm.name, "dpkg-query", "-W", "kvmmanager-agent")
    state = run(lab, cloud_vm.name, "systemctl", "is-active", "kvmmanager-agent.service")
    assert state.strip() == "active"
    status = run(lab, cloud_vm.name, "cloud-init", "status", "--wait", timeout=600)
    assert "status: done" in status


def test_clone_gets_its_own_identity(lab: Lab, cloud_vm: CloudVm) -> None:
    """Shut down, full clone through the API, boot the clone: new hostname (its name),
    machine-id and SSH host key, same user and key."""
    name = cloud_vm.name
    before = {
        "machine_id": run(lab, name, "cat", "/etc/machine-id").strip(),
        "host_key": run(lab, name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").split()[1],
    }
    mark = lab.events.mark()
    lab.api.action(name, "shutdown", mode="agent")
    lab.events.wait(lifecycle_event(name, "shutoff"), timeout=300, after=mark)
    clone = lab.name("ci2")
    job = lab.api.call("POST", lab.api._h(f"vms/{name}/clone"), json={"name": clone})
    try:
        from .conftest import wait_job

        result = wait_job(lab, job["job_id"])["result"]
        assert result["identity"] == "cloud-init"
        mark = lab.events.mark()
        lab.api.action(clone, "start")
        ConsoleLog(LIBVIRT_URI, clone, lab.log_dir / f"{clone}.console.log").start()
        wait_agent(lab, clone, mark)
        assert lab.api.agent(clone, "system")["hostname"] == clone
        assert run(lab, clone, "cat", "/etc/machine-id").strip() != before["machine_id"]
        key = run(lab, clone, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").split()[1]
        assert key != before["host_key"]
        keys = lab.api.read_file(clone, "/home/alice/.ssh/authorized_keys")["content"]
        assert cloud_vm.key in keys.splitlines()
    finally:
        remove(lab, clone)
