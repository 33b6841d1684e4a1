"""Scenario 8.5: cloud-init provisioning for real, and a clone's new identity.

A debootstrap Debian 12 disk with cloud-init inside (tests/e2e/cloud/build.py, cached
under .cache/e2e-cloud/) is uploaded as a volume through the API, then
POST .../vms/from-cloud-image makes a linked disk at a bigger size and a NoCloud seed
(hostname, a user with an SSH key and a password, the agent installer) and boots it.
Nothing else is done to the guest: cloud-init sets it up and installs our agent from
the seed, and every check goes THROUGH THAT AGENT (hostname; the agent installed by
cloud-init's runcmd, per cloud-init's own log). Not checked here: the user's
authorized_keys and a booted clone's new identity, because the packaged agent's default
policy reads only /var/log and /tmp and runs no command; the seeds carrying them are
checked in tests/kvmmanager/services/test_cloudinit*.py.

The image boots its own kernel directly (it has no bootloader: the root file system is
the whole disk). Measured on the 2-core CI machine under TCG (docs/performance.md, e2e):
image build 256 s once (then cached: under 1 s), upload ~3 s, boot to agent answering
114-181 s (systemd + four cloud-init stages + dpkg installing the agent). Timeouts below
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
from .support.events import agent_event
from .support.guests import LIBVIRT_URI

pytestmark = pytest.mark.vm
BOOT_TIMEOUT = 900  # systemd + cloud-init under TCG on a busy 2-core machine
MEMORY_MIB = 768
PASSWORD = "kvmm-e2e-not-secret"  # hashed into the seed (unit-tested)


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


def output_log(lab: Lab, vm: str) -> str:
    """cloud-init's own account (/var/log is what the agent's default policy reads)."""
    return lab.api.read_file(vm, "/var/log/cloud-init-output.log")["content"]


def test_hostname_seen_through_the_agent(lab: Lab, cloud_vm: CloudVm) -> None:
    """The agent's default policy reads /var/log and /tmp only and runs no command: the
    user's authorized_keys cannot be read through it (see the module docstring)."""
    system = lab.api.agent(cloud_vm.name, "system")
    assert system["hostname"] == cloud_vm.hostname


def test_the_agent_came_up_by_itself(lab: Lab, cloud_vm: CloudVm) -> None:
    """Installed by cloud-init's runcmd from the seed (dpkg, systemd unit), nobody else."""
    assert lab.api.vm(cloud_vm.name)["agent_status"] == "connected"
    log = output_log(lab, cloud_vm.name)
    assert "kvmmanager-agent: installed kvmmanager-agent" in log
    assert "(deb install)" in log
